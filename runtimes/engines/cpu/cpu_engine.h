// The CPU engine: a bundle's native weights (weights/model.safetensors + config.json with
// quantization_config) packed once at load into a CpuModel, which any number of engines share;
// each CpuEngine adds its own KV cache and scratch (one per session). Implements edgevlm::Engine.
//
//   auto model = edgevlm::cpu::CpuModel::load(edgevlm::Bundle::open(dir), {.threads = 2});
//   auto engine = model->new_engine();                 // or CpuEngine::load(bundle, options): both at once
//   engine->embed(ids, n, rows);                       // [n, H]
//   engine->encode_images(tiles, n_tiles, features);   // [n_tiles, T_img, H]
//   edgevlm::run_prefill(*engine, rows, n, 0, chunk, logits);   // core/prefill.h
//   engine->decode(row, pos, logits);
//
// Engines of one model may run on different threads at once: the weights are read-only, the
// thread pool serializes its parallel loops, and the vision tower (whose scratch the model owns)
// encodes one image at a time.
#pragma once

#include <memory>
#include <mutex>
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

class CpuEngine;

/// What the engines of one model share: packed weights, the kernel set, the thread pool.
class CpuModel : public std::enable_shared_from_this<CpuModel> {
 public:
  /// Loads and packs every weight. Errors: Error(kCorruptFile / kUnsupported / kInvalidArgument).
  static std::shared_ptr<CpuModel> load(const Bundle& bundle, const EngineOptions& options = {});
  /// A new engine over these weights with its own (empty) KV cache.
  std::unique_ptr<CpuEngine> new_engine();

  int threads() const { return pool_ ? pool_->size() : 1; }
  const Kernels& kernels() const { return *kernels_; }
  int max_context() const { return max_context_; }
  KvDtype kv_dtype() const { return kv_; }

 private:
  friend class CpuEngine;
  CpuModel() = default;
  SafeTensors weights_;  // keeps the mapping the embedding rows read alive
  std::unique_ptr<ThreadPool> pool_;
  const Kernels* kernels_ = nullptr;
  std::shared_ptr<const LlamaWeights> decoder_;
  std::unique_ptr<VisionPipeline> vision_;
  std::mutex vision_mu_;  // the vision pipeline's scratch is shared: one image at a time
  int max_context_ = 0;
  KvDtype kv_ = KvDtype::f16;
  std::string family_;
};

class CpuEngine final : public Engine {
 public:
  /// A model and its first engine (the engine keeps the model alive).
  static std::unique_ptr<CpuEngine> load(const Bundle& bundle, const EngineOptions& options = {});

  int hidden_size() const override { return decoder_.config().hidden; }
  int vocab_size() const override { return decoder_.config().vocab; }
  int max_context() const override { return model_->max_context_; }
  int tokens_per_tile() const override { return model_->vision_ ? model_->vision_->tokens_per_tile() : 0; }
  int tile_size() const override { return model_->vision_ ? model_->vision_->tile_size() : 0; }
  std::string name() const override;

  void embed(const int64_t* ids, int n, float* out) override;
  void encode_images(const float* tiles, int n, float* out) override;
  void prefill(const float* rows, const int32_t* positions, int c, float* logits) override;
  void decode(const float* row, int32_t position, float* logits) override;
  void score(const float* rows, const int32_t* positions, int c, const int32_t* targets, float* logprobs,
             float* logits) override;
  void reset() override { decoder_.reset(); }

  int threads() const { return model_->threads(); }
  const char* kernels_name() const { return compute_.k->name; }
  KvDtype kv_dtype() const { return decoder_.cache().dtype(); }
  const std::shared_ptr<CpuModel>& model() const { return model_; }

 private:
  friend class CpuModel;
  explicit CpuEngine(std::shared_ptr<CpuModel> model);
  std::shared_ptr<CpuModel> model_;
  Compute compute_;  // the model's kernels and pool; this engine's activation scratch
  LlamaDecoder decoder_;
  std::vector<float> row_logits_;  // [c, V] of the chunk being scored
};

}  // namespace edgevlm::cpu
