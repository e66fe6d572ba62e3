// The Llama-family text decoder on the CPU (edgevlm/models/llama/language.py): RMSNorm, RoPE with
// its scaling variants, grouped-query attention over the static KV cache with a mask from
// positions alone, SwiGLU MLP, tied or untied LM head. Weights are packed once at load and shared by
// every session of a model; a session's decoder owns its KV cache and scratch buffers, which grow to
// the largest chunk seen and are reused.
#pragma once

#include <memory>
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
  // q, k, v fused into qkv [(heads + 2 kv_heads) hd, H] and gate, up into gate_up [2 I, H] when
  // their schemes allow (one activation quantization and one pass over the pool instead of 3 / 2)
  bool fused_qkv = false, fused_gate_up = false;
  Linear qkv, gate_up;
};

/// The decoder's weights, packed once at load and read-only afterwards: every engine (session) of
/// a model shares one copy; each has its own KV cache and scratch (LlamaDecoder).
struct LlamaWeights {
  TextConfig cfg;
  Act act = Act::silu;
  WeightSource::Embedding embed;
  std::vector<DecoderLayer> layers;
  Floats final_norm;              // [H]
  Linear lm_head;                 // [V, H]
  std::vector<float> cos, sin;    // [max_context, hd/2]
  int max_context = 0;

  /// Reads `language_model.*` weights; RoPE tables for max_context positions.
  static std::shared_ptr<const LlamaWeights> load(const WeightSource& ws, const TextConfig& cfg, int max_context);
};

/// One conversation's decoder state over shared weights: the KV cache and the scratch buffers.
class LlamaDecoder {
 public:
  /// A KV cache of the weights' max_context positions in `kv`.
  LlamaDecoder(std::shared_ptr<const LlamaWeights> weights, KvDtype kv);
  const TextConfig& config() const { return w_->cfg; }

  /// ids [n] -> out [n, H]
  void embed(const int64_t* ids, int n, float* out) const;
  /// rows [C, H] at positions [C] -> logits [V] of the last row (every row's, [C, V], when
  /// all_rows); keys/values written to the cache.
  void forward(Compute& c, const float* rows, const int32_t* positions, int C, float* logits, bool all_rows = false);
  void reset() { cache_.clear(); }
  KvCache& cache() { return cache_; }
  const KvCache& cache() const { return cache_; }

 private:
  void ensure_scratch(int C);
  void attention(Compute& c, int layer, const int32_t* positions, int C, const float* q, size_t ldq);

  std::shared_ptr<const LlamaWeights> w_;
  KvCache cache_;
  // scratch, rows of the current chunk
  int cap_ = 0;
  // qkv_ holds q, k, v side by side per row; gu_ the gate and up projections side by side.
  std::vector<float> x_, h_, qkv_, att_, gu_, mid_;  // [C, H] x2, [C, (nh+2kvh)*hd], [C, nh*hd], [C, 2I], [C, I]
  std::vector<float> last_;                   // [H]
  std::vector<std::vector<float>> part_scratch_;  // per pool part: keys, values [ctx, hd] + scores [groups, ctx]
};

}  // namespace edgevlm::cpu
