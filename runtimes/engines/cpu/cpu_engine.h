// The CPU engine: a bundle's native weights (weights/model.safetensors + config.json with
// quantization_config) packed once at load, the forward passes of engines/cpu/, one KV cache, a
// thread pool. Implements edgevlm::Engine.
//
//   auto engine = edgevlm::cpu::CpuEngine::load(edgevlm::Bundle::open(dir), {.threads = 2});
//   engine->embed(ids, n, rows);                      // [n, H]
//   engine->encode_images(tiles, n_tiles, features);  // [n_tiles, T_img, H]
//   edgevlm::run_prefill(*engine, rows, n, 0, chunk, logits);   // core/prefill.h
//   engine->decode(row, pos, logits);
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/bundle.h"
#include "engines/cpu/decoder.h"
#include "engines/cpu/threadpool.h"
#include "engines/cpu/vision.h"
#include "engines/engine.h"

namespace edgevlm::cpu {

struct EngineOptions {
  int threads = 0;           // 0: the hardware's cores, at most 4
  std::string kernels;       // "": the best set this CPU runs (or EDGEVLM_KERNELS); scalar|avx2|avx512|neon
  std::string kv_dtype;      // "": int8 when the recipe asks for it, else f16; f16 | f32 | int8
  int max_context = 0;       // 0: the manifest's max_context
};

class CpuEngine final : public Engine {
 public:
  /// Loads and packs every weight. Errors: Error(kCorruptFile / kUnsupported / kInvalidArgument).
  static std::unique_ptr<CpuEngine> load(const Bundle& bundle, const EngineOptions& options = {});

  int hidden_size() const override { return decoder_.config().hidden; }
  int vocab_size() const override { return decoder_.config().vocab; }
  int max_context() const override { return max_context_; }
  int tokens_per_tile() const override { return vision_ ? vision_->tokens_per_tile() : 0; }
  int tile_size() const override { return vision_ ? vision_->tile_size() : 0; }
  std::string name() const override;

  void embed(const int64_t* ids, int n, float* out) override;
  void encode_images(const float* tiles, int n, float* out) override;
  void prefill(const float* rows, const int32_t* positions, int c, float* logits) override;
  void decode(const float* row, int32_t position, float* logits) override;
  void score(const float* rows, const int32_t* positions, int c, const int32_t* targets, float* logprobs,
             float* logits) override;
  void reset() override { decoder_.reset(); }

  int threads() const { return pool_ ? pool_->size() : 1; }
  const char* kernels_name() const { return compute_.k->name; }
  KvDtype kv_dtype() const { return decoder_.cache().dtype(); }

 private:
  CpuEngine() = default;
  SafeTensors weights_;  // keeps the mapping the embedding rows read alive
  std::unique_ptr<ThreadPool> pool_;
  Compute compute_;
  LlamaDecoder decoder_;
  std::unique_ptr<VisionPipeline> vision_;
  std::vector<float> row_logits_;  // [c, V] of the chunk being scored
  int max_context_ = 0;
  std::string family_;
};

}  // namespace edgevlm::cpu
