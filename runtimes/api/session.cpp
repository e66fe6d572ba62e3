#include "api/session.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/prefill.h"
#include "core/error.h"
#include "core/version.h"
#include "engines/cpu/cpu_engine.h"

namespace edgevlm {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double round3(double x) { return double(int64_t(x * 1000.0 + (x >= 0 ? 0.5 : -0.5))) / 1000.0; }

}  // namespace

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

std::string Stats::to_json() const {
  nlohmann::json j;
  j["schema_version"] = 1;
  j["backend"] = backend;
  j["prompt_tokens"] = prompt_tokens;
  j["image_tiles"] = image_tiles;
  j["preprocess_ms"] = round3(preprocess_ms);
  j["vision_encode_ms"] = round3(vision_encode_ms);
  j["prefill_ms"] = round3(prefill_ms);
  std::vector<double> chunks;
  for (double c : prefill_chunks_ms) chunks.push_back(round3(c));
  j["prefill_chunks_ms"] = chunks;
  j["chunk_size"] = chunk_size;
  j["ttft_ms"] = round3(ttft_ms);
  j["generated_tokens"] = generated_tokens;
  j["decode_ms"] = round3(decode_ms);
  j["peak_rss_mb"] = round3(peak_rss_mb);
  j["finish_reason"] = finish_reason;
  j["prefill_tps"] = prefill_ms > 0 ? round3(prompt_tokens / (prefill_ms / 1e3)) : 0.0;
  const int steps = generated_tokens - 1;
  j["decode_tps"] = steps > 0 && decode_ms > 0 ? round3(steps / (decode_ms / 1e3)) : 0.0;
  j["load_ms"] = round3(load_ms);
  j["context_used"] = context_used;
  j["kernels"] = kernels;
  j["threads"] = threads;
  j["runtime_version"] = version();
  return j.dump();
}

// ---- Model -------------------------------------------------------------------------------------

std::shared_ptr<Model> Model::load(const std::string& bundle_dir, const ModelOptions& options) {
  const auto t0 = Clock::now();
  std::shared_ptr<Model> m(new Model());
  m->options_ = options;
  m->bundle_ = Bundle::open(bundle_dir, options.verify_files);
  const nlohmann::json& man = m->bundle_.manifest();
  if (!man.contains("targets") || !man["targets"].is_object() || !man["targets"].contains("native"))
    fail(ErrorCode::kUnsupported, bundle_dir + ": the bundle has no native target (export it with --targets native)");
  m->tokenizer_ = Tokenizer::from_file(bundle_dir + "/tokenizer.json");
  m->prompts_ = std::make_unique<PromptBuilder>(m->tokenizer_, PromptConfig::from_manifest(man));
  if (const nlohmann::json* pre = m->bundle_.image_preprocessing()) {
    m->image_params_ = ImageParams::from_json(*pre);
    m->has_vision_ = true;
  }
  const auto& eos = man.at("special_tokens").value("eos", nlohmann::json::array());
  if (eos.is_array())
    for (const auto& e : eos)
      if (e.is_number_integer()) m->eos_ids_.push_back(e.get<int32_t>());
  m->chunk_size_ = options.chunk_size > 0 ? options.chunk_size : man.at("chunk_size").get<int>();
  m->max_context_ = options.max_context > 0 ? options.max_context : man.at("max_context").get<int>();
  if (m->chunk_size_ < 1 || m->chunk_size_ > m->max_context_)
    fail(ErrorCode::kInvalidArgument, "chunk size " + std::to_string(m->chunk_size_) + " must be in 1..max context (" +
                                          std::to_string(m->max_context_) + ")");
  cpu::EngineOptions eo;
  eo.threads = options.threads;
  eo.kernels = options.kernels;
  eo.max_context = m->max_context_;
  m->engines_ = cpu::CpuModel::load(m->bundle_, eo);
  m->load_ms_ = ms_since(t0);
  return m;
}

std::unique_ptr<Engine> Model::new_engine() const { return engines_->new_engine(); }

std::vector<int32_t> Model::turn_ids(const std::string& text, const std::vector<std::array<int, 2>>& image_sizes,
                                     bool first, bool use_template) const {
  if (!image_sizes.empty() && !has_vision_) fail(ErrorCode::kInvalidArgument, "this is a text-only model: it takes no images");
  const std::string rendered = prompts_->render_turn(text, int(image_sizes.size()), first, use_template);
  std::vector<std::array<int, 2>> grids;
  for (const auto& wh : image_sizes) {
    if (wh[0] < 1 || wh[1] < 1 || wh[0] > kMaxImageSide || wh[1] > kMaxImageSide)
      fail(ErrorCode::kInvalidArgument, "image of " + std::to_string(wh[0]) + "x" + std::to_string(wh[1]) + " pixels: bad size");
    grids.push_back(image_grid(wh[0], wh[1], image_params_));
  }
  return prompts_->tokenize(rendered, grids, first);
}

// ---- Session -----------------------------------------------------------------------------------

Session::Session(std::shared_ptr<Model> model) : model_(std::move(model)), engine_(model_->new_engine()) {
  new_stats();
}

void Session::new_stats() {
  stats_ = Stats();
  stats_.chunk_size = model_->chunk_size();
  stats_.kernels = engine_->name();
  const auto* cpu_engine = dynamic_cast<const cpu::CpuEngine*>(engine_.get());
  stats_.threads = cpu_engine ? cpu_engine->threads() : model_->options().threads;
  stats_.load_ms = model_->load_ms();
  stats_.context_used = pos_;
}

void Session::reset() {
  engine_->reset();
  history_.clear();
  logits_.clear();
  have_logits_ = false;
  pos_ = 0;
  turns_ = 0;
  pending_ = -1;
  pending_stop_ = false;
  new_stats();
}

void Session::truncate(int n_tokens) {
  if (n_tokens < 0 || n_tokens > pos_)
    fail(ErrorCode::kInvalidArgument, "truncate: " + std::to_string(n_tokens) + " tokens asked, the KV cache holds " +
                                          std::to_string(pos_));
  // rows past n_tokens stay in the cache but are never read: attention sees positions <= the query's
  history_.resize(size_t(n_tokens));
  pos_ = n_tokens;
  pending_ = -1;
  pending_stop_ = false;
  have_logits_ = false;
  if (n_tokens == 0) turns_ = 0;
  stats_.context_used = pos_;
}

void Session::add_turn(const std::vector<InputChunk>& chunks, bool use_template) {
  const auto t0 = Clock::now();
  std::string text;
  std::vector<const InputChunk*> images;
  for (const InputChunk& c : chunks) {
    if (c.is_image) images.push_back(&c);
    else text += c.text;
  }
  if (!images.empty() && !model_->has_vision())
    fail(ErrorCode::kInvalidArgument, "this is a text-only model: it takes no images");
  const bool first = pos_ == 0;
  const std::string rendered = model_->prompts().render_turn(text, int(images.size()), first, use_template);
  std::vector<ImageTiles> tiles;
  std::vector<std::array<int, 2>> grids;
  for (const InputChunk* c : images) {
    tiles.push_back(preprocess_image(c->rgb, c->rgb_size, c->width, c->height, model_->image_params()));
    grids.push_back({tiles.back().rows, tiles.back().cols});
  }
  std::vector<int32_t> ids = model_->prompts().tokenize(rendered, grids, first);
  if (ids.empty()) fail(ErrorCode::kInvalidArgument, "the prompt is empty");
  check_fits(ids.size());
  take_pending(ids);
  new_stats();
  stats_.preprocess_ms = ms_since(t0);

  std::vector<float> features;
  const int feature_rows = encode(tiles, features);
  prefill_ids(ids, features, feature_rows);
  stats_.ttft_ms = stats_.preprocess_ms + stats_.vision_encode_ms + stats_.prefill_ms;
  ++turns_;
}

int Session::encode(const std::vector<ImageTiles>& tiles, std::vector<float>& features) {
  int n_tiles = 0;
  for (const ImageTiles& t : tiles) n_tiles += t.num_tiles;
  stats_.image_tiles = n_tiles;
  if (n_tiles == 0) return 0;
  const auto t1 = Clock::now();
  const int T = engine_->tokens_per_tile(), H = engine_->hidden_size();
  features.resize(size_t(n_tiles) * T * H);
  size_t at = 0;
  for (const ImageTiles& t : tiles) {
    if (t.height != engine_->tile_size() || t.width != engine_->tile_size())
      fail(ErrorCode::kInternal, "preprocessed tiles are " + std::to_string(t.height) + "x" + std::to_string(t.width) +
                                     " but the encoder takes " + std::to_string(engine_->tile_size()));
    engine_->encode_images(t.pixels.data(), t.num_tiles, features.data() + at);
    at += size_t(t.num_tiles) * T * H;
  }
  stats_.vision_encode_ms = ms_since(t1);
  return n_tiles * T;
}

void Session::check_fits(size_t n) const {
  // the previous reply's unfed token goes first (a stop token is dropped instead)
  const int64_t rows = int64_t(n) + (pending_ >= 0 && !pending_stop_ ? 1 : 0);
  if (pos_ + rows > model_->max_context())
    fail(ErrorCode::kContextOverflow, "prompt of " + std::to_string(rows) + " tokens at position " + std::to_string(pos_) +
                                          " does not fit the context of " + std::to_string(model_->max_context()) + " tokens");
}

void Session::take_pending(std::vector<int32_t>& ids) {
  if (pending_ < 0) return;
  history_.pop_back();  // re-added with the prompt, or dropped when a stop token (the prompt closes the reply)
  if (!pending_stop_) ids.insert(ids.begin(), pending_);
  pending_ = -1;
  pending_stop_ = false;
}

void Session::check_ids(const std::vector<int32_t>& ids, bool allow_image_token) const {
  const PromptConfig& pc = model_->prompts().config();
  for (int32_t id : ids)
    if ((id < 0 || id >= engine_->vocab_size()) && !(allow_image_token && pc.has_image_token && id == pc.image_token_id))
      fail(ErrorCode::kInvalidArgument, "token id " + std::to_string(id) + " outside the vocabulary (" +
                                            std::to_string(engine_->vocab_size()) + ")");
}

std::vector<float> Session::score(const std::vector<int32_t>& ids) {
  if (ids.size() < 2) fail(ErrorCode::kInvalidArgument, "score: at least two tokens are needed");
  check_ids(ids);
  if (int64_t(ids.size()) > model_->max_context())
    fail(ErrorCode::kContextOverflow, std::to_string(ids.size()) + " tokens do not fit the context of " +
                                          std::to_string(model_->max_context()) + " tokens");
  reset();
  const int H = engine_->hidden_size();
  const int n = int(ids.size());
  const auto t0 = Clock::now();
  const std::vector<int64_t> wide(ids.begin(), ids.end());
  std::vector<float> rows(size_t(n) * H);
  engine_->embed(wide.data(), n, rows.data());
  std::vector<float> logprobs(size_t(n) - 1);
  logits_.assign(engine_->vocab_size(), 0.0f);
  run_score(*engine_, rows.data(), ids.data(), n, 0, model_->chunk_size(), logprobs.data(), logits_.data(),
            &stats_.prefill_chunks_ms);
  stats_.prefill_ms = stats_.ttft_ms = ms_since(t0);
  stats_.prompt_tokens = n;
  history_ = ids;
  pos_ = n;
  have_logits_ = true;
  stats_.context_used = pos_;
  ++turns_;
  return logprobs;
}

void Session::add_tokens(const std::vector<int32_t>& given, const std::vector<InputChunk>& images) {
  const auto t0 = Clock::now();
  if (given.empty()) fail(ErrorCode::kInvalidArgument, "no prompt tokens");
  if (!images.empty() && !model_->has_vision()) fail(ErrorCode::kInvalidArgument, "this is a text-only model: it takes no images");
  const PromptConfig& pc = model_->prompts().config();
  std::vector<int32_t> ids(given);
  check_ids(ids, /*allow_image_token=*/true);
  check_fits(ids.size());
  std::vector<ImageTiles> tiles;
  int64_t rows_needed = 0;
  for (const InputChunk& c : images) {
    if (!c.is_image) fail(ErrorCode::kInvalidArgument, "add_tokens: a text chunk among the images");
    tiles.push_back(preprocess_image(c.rgb, c.rgb_size, c.width, c.height, model_->image_params()));
    rows_needed += int64_t(tiles.back().num_tiles) * engine_->tokens_per_tile();
  }
  if (!images.empty()) {
    const int64_t slots = std::count(ids.begin(), ids.end(), pc.image_token_id);
    if (slots != rows_needed)
      fail(ErrorCode::kInvalidArgument, "the prompt has " + std::to_string(slots) + " image token rows but the " +
                                            std::to_string(images.size()) + " images give " + std::to_string(rows_needed));
  }
  take_pending(ids);
  new_stats();
  stats_.preprocess_ms = ms_since(t0);
  std::vector<float> features;
  const int feature_rows = encode(tiles, features);
  prefill_ids(ids, features, feature_rows);
  stats_.ttft_ms = stats_.preprocess_ms + stats_.vision_encode_ms + stats_.prefill_ms;
  ++turns_;
}

void Session::prefill_ids(const std::vector<int32_t>& ids, const std::vector<float>& features, int feature_rows) {
  const int H = engine_->hidden_size();
  const int n = int(ids.size());
  const auto t0 = Clock::now();
  // embeddings of every prompt row; image placeholder rows take the image features in order
  const std::vector<int64_t> wide(ids.begin(), ids.end());
  std::vector<float> rows(size_t(n) * H);
  engine_->embed(wide.data(), n, rows.data());
  const PromptConfig& pc = model_->prompts().config();
  const int32_t image_id = pc.image_token_id;
  if (pc.has_image_token) merge_image_features(wide.data(), n, image_id, features.data(), feature_rows, H, rows.data());
  logits_.assign(engine_->vocab_size(), 0.0f);
  run_prefill(*engine_, rows.data(), n, pos_, model_->chunk_size(), logits_.data(), &stats_.prefill_chunks_ms);
  stats_.prefill_ms = ms_since(t0);
  stats_.prompt_tokens = n;
  history_.insert(history_.end(), ids.begin(), ids.end());
  pos_ += n;
  have_logits_ = true;
  stats_.context_used = pos_;
}

std::vector<int32_t> Session::generate(const SamplingParams& params, const TokenCallback& on_token) {
  if (!have_logits_) fail(ErrorCode::kInvalidArgument, "generate: add a turn (or tokens) first");
  Sampler sampler(params);
  cancel_.store(false);
  const std::vector<int32_t>& stops = model_->eos_ids();
  const int H = engine_->hidden_size();
  std::vector<float> row(H), scratch;
  std::vector<int32_t> out;
  std::string shown;  // text already handed to the callback
  stats_.finish_reason = "length";
  Clock::time_point t_first;
  for (int i = 0; i < params.max_new_tokens; ++i) {
    scratch = logits_;
    const int32_t token = sampler.sample(scratch.data(), int(scratch.size()), history_);
    out.push_back(token);
    history_.push_back(token);
    const auto now = Clock::now();
    if (i == 0) t_first = now;
    stats_.generated_tokens = i + 1;
    stats_.decode_ms = std::chrono::duration<double, std::milli>(now - t_first).count();
    const bool is_stop = !params.ignore_eos && std::find(stops.begin(), stops.end(), token) != stops.end();
    bool stop = is_stop;
    if (is_stop) stats_.finish_reason = "stop";
    else if (i + 1 < params.max_new_tokens && pos_ >= model_->max_context()) {
      stats_.finish_reason = "context";
      stop = true;
    }
    const bool last = stop || i + 1 == params.max_new_tokens;
    if (on_token) {
      std::string piece;
      const std::vector<int32_t> text_ids(out.begin(), out.end() - (is_stop ? 1 : 0));
      const std::string full = model_->tokenizer().decode(text_ids, true);
      // hold back a trailing incomplete UTF-8 sequence (decoded as U+FFFD) until it completes or
      // generation ends, as the Python StreamDecoder does
      const bool partial = full.size() >= 3 && full.compare(full.size() - 3, 3, "\xEF\xBF\xBD") == 0;
      if ((last || !partial) && full.size() >= shown.size() && full.compare(0, shown.size(), shown) == 0) {
        piece = full.substr(shown.size());
        shown = full;
      }
      if (!on_token(token, piece) || cancel_.load()) {
        stats_.finish_reason = "cancelled";
        stop = true;
      }
    } else if (cancel_.load()) {
      stats_.finish_reason = "cancelled";
      stop = true;
    }
    if (stop || i + 1 == params.max_new_tokens) break;
    const int64_t id = token;
    engine_->embed(&id, 1, row.data());
    engine_->decode(row.data(), pos_, logits_.data());
    ++pos_;
  }
  // the last sampled token is not in the cache: a stop token is closed by the next turn's text;
  // any other token is fed first when the conversation goes on
  have_logits_ = false;
  if (!out.empty()) {
    pending_ = out.back();
    pending_stop_ = !params.ignore_eos && std::find(stops.begin(), stops.end(), pending_) != stops.end();
  }
  stats_.context_used = pos_;
  stats_.peak_rss_mb = peak_rss_mb();
  return out;
}

}  // namespace edgevlm
