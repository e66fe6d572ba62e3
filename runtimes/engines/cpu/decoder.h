// The Llama-family text decoder on the CPU (edgevlm/models/llama/language.py): RMSNorm, RoPE with
// its scaling variants, grouped-query attention over the static KV cache with a mask from
// positions alone, SwiGLU MLP, tied or untied LM head. Weights are packed once at load; the
// scratch buffers grow to the largest chunk seen and are reused.
#pragma once

#include <vector>

#include "engines/cpu/config.h"
#include "engines/cpu/kv_cache.h"
#include "engines/cpu/linear.h"
#include "engines/cpu/ops.h"

namespace edgevlm::cpu {

struct DecoderLayer {
  Floats input_norm;  // [H]
  Floats post_norm;   // [H]
  Linear q, k, v, o;  // q [heads*hd, H], k/v [kv_heads*hd, H], o [H, heads*hd]
  Linear gate, up, down;  // gate/up [I, H], down [H, I]
};

class LlamaDecoder {
 public:
  /// Reads `language_model.*` weights; the KV cache holds max_context positions.
  void load(const WeightSource& ws, const TextConfig& cfg, int max_context, KvDtype kv);
  const TextConfig& config() const { return cfg_; }

  /// ids [n] -> out [n, H]
  void embed(const int64_t* ids, int n, float* out) const;
  /// rows [C, H] at positions [C] -> logits [V] of the last row; keys/values written to the cache.
  void forward(Compute& c, const float* rows, const int32_t* positions, int C, float* logits);
  void reset() { cache_.clear(); }
  KvCache& cache() { return cache_; }
  const KvCache& cache() const { return cache_; }

 private:
  void ensure_scratch(int C);
  void attention(Compute& c, int layer, const int32_t* positions, int C);

  TextConfig cfg_;
  Act act_ = Act::silu;
  WeightSource::Embedding embed_;
  std::vector<DecoderLayer> layers_;
  Floats final_norm_;  // [H]
  Linear lm_head_;     // [V, H]
  std::vector<float> cos_, sin_;  // [max_context, hd/2]
  KvCache cache_;
  // scratch, rows of the current chunk
  int cap_ = 0;
  std::vector<float> x_, h_, q_, k_, v_, att_, g_, u_;  // [C, H], [C, H], [C, nh*hd], [C, kvh*hd] x2, [C, nh*hd], [C, I] x2
  std::vector<float> last_;                              // [H]
  std::vector<std::vector<float>> part_scratch_;         // per pool part: scores [groups*ctx] + tmp [2*hd]
};

}  // namespace edgevlm::cpu
