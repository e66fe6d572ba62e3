#include "engines/cpu/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.h"

namespace edgevlm::cpu {

std::shared_ptr<CpuModel> CpuModel::load(const Bundle& bundle, const EngineOptions& opt) {
  std::shared_ptr<CpuModel> e(new CpuModel());
  const nlohmann::json& m = bundle.manifest();
  e->family_ = bundle.family();
  if (e->family_ != "llama" && e->family_ != "smolvlm" && e->family_ != "llava" && e->family_ != "mobilevlm") {
    fail(ErrorCode::kUnsupported, "model family '" + e->family_ + "' is not supported by the CPU engine");
  }
  e->weights_ = bundle.weights();
  const int manifest_ctx = static_cast<int>(json_number(m, "max_context", 0));
  e->max_context_ = opt.max_context > 0 ? opt.max_context : manifest_ctx;
  if (e->max_context_ < 1) fail(ErrorCode::kCorruptFile, bundle.dir() + "/manifest.json: max_context missing or not positive");

  if (!opt.kernels.empty()) {
    e->kernels_ = kernels_by_name(opt.kernels.c_str());
    if (!e->kernels_) fail(ErrorCode::kUnsupported, "kernel set '" + opt.kernels + "' is not available on this CPU");
  } else {
    e->kernels_ = &cpu::kernels();
  }
  int threads = opt.threads;
  if (threads <= 0) threads = std::max(1, std::min(4, static_cast<int>(std::thread::hardware_concurrency())));
  if (threads > 1) e->pool_ = std::make_unique<ThreadPool>(threads);

  std::string kv = opt.kv_dtype;
  if (kv.empty()) {
    const nlohmann::json& q = bundle.quantization_config();
    kv = q.is_object() && q.value("kv_cache", std::string("float")) == "int8" ? "int8" : "f16";
  }
  e->kv_ = kv_dtype_from_name(kv);
  const WeightSource ws(bundle, e->family_);
  const TextConfig tc = TextConfig::from_json(m.at("text_config"));
  e->decoder_ = LlamaWeights::load(ws, tc, e->max_context_);
  if (e->family_ != "llama") {
    if (!m.contains("vision_config")) fail(ErrorCode::kCorruptFile, bundle.dir() + "/manifest.json: vision_config missing");
    e->vision_ = std::make_unique<VisionPipeline>();
    e->vision_->load(ws, e->family_, m["vision_config"], m.value("projector_config", nlohmann::json::object()), tc.hidden);
  }
  // The linears now hold repacked copies; what still reads the mapping (embedding rows) faults in
  // only the pages it touches. Without this the whole file would stay resident beside its copy.
  e->weights_.release_pages();
  return e;
}

std::unique_ptr<CpuEngine> CpuModel::new_engine() { return std::unique_ptr<CpuEngine>(new CpuEngine(shared_from_this())); }

CpuEngine::CpuEngine(std::shared_ptr<CpuModel> model)
    : model_(std::move(model)), decoder_(model_->decoder_, model_->kv_) {
  compute_.k = model_->kernels_;
  compute_.pool = model_->pool_.get();
}

std::unique_ptr<CpuEngine> CpuEngine::load(const Bundle& bundle, const EngineOptions& opt) {
  return CpuModel::load(bundle, opt)->new_engine();
}

std::string CpuEngine::name() const {
  return std::string("cpu (") + compute_.k->name + ", " + std::to_string(threads()) + " threads)";
}

void CpuEngine::embed(const int64_t* ids, int n, float* out) {
  if (n < 0) fail(ErrorCode::kInvalidArgument, "negative token count");
  decoder_.embed(ids, n, out);
}

void CpuEngine::encode_images(const float* tiles, int n, float* out) {
  VisionPipeline* vision = model_->vision_.get();
  if (!vision) fail(ErrorCode::kInvalidArgument, model_->family_ + " is a text-only model: it takes no images");
  if (n < 0) fail(ErrorCode::kInvalidArgument, "negative tile count");
  const size_t S = vision->tile_size();
  const size_t tile = 3 * S * S, feat = static_cast<size_t>(tokens_per_tile()) * hidden_size();
  std::lock_guard<std::mutex> lock(model_->vision_mu_);
  for (int i = 0; i < n; ++i) vision->forward(compute_, tiles + i * tile, out + i * feat);
}

void CpuEngine::prefill(const float* rows, const int32_t* positions, int c, float* logits) {
  decoder_.forward(compute_, rows, positions, c, logits);
}

void CpuEngine::decode(const float* row, int32_t position, float* logits) {
  decoder_.forward(compute_, row, &position, 1, logits);
}

void CpuEngine::score(const float* rows, const int32_t* positions, int c, const int32_t* targets, float* logprobs,
                      float* logits) {
  const int V = vocab_size();
  for (int i = 0; i < c; ++i)
    if (targets[i] < 0 || targets[i] >= V)
      fail(ErrorCode::kInvalidArgument, "score: target id " + std::to_string(targets[i]) + " outside the vocabulary (" +
                                            std::to_string(V) + ")");
  row_logits_.resize(static_cast<size_t>(c) * V);
  decoder_.forward(compute_, rows, positions, c, row_logits_.data(), /*all_rows=*/true);
  for (int i = 0; i < c; ++i) {
    const float* l = &row_logits_[static_cast<size_t>(i) * V];
    const float top = *std::max_element(l, l + V);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(double(l[j]) - top);
    logprobs[i] = float(double(l[targets[i]]) - top - std::log(sum));
  }
  std::copy(row_logits_.end() - V, row_logits_.end(), logits);
}

}  // namespace edgevlm::cpu
