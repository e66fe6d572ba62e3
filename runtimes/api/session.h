// The runtime above an engine: a loaded model (bundle, tokenizer, prompt builder, engine) and a
// session that takes turns of text and images, prefills them in static chunks against the
// engine's KV cache (the chunk plan of edgevlm/engine.py) and generates with a sampler. The C API
// (include/edgevlm/edgevlm.h) and the Python binding are thin layers over these two classes.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/bundle.h"
#include "core/image.h"
#include "core/prompt.h"
#include "core/sampler.h"
#include "core/tokenizer.h"
#include "engines/engine.h"

namespace edgevlm {

namespace cpu {
class CpuModel;
}

struct ModelOptions {
  int threads = 0;             // 0: every core
  bool verify_files = true;    // check every file's sha256 before use
  std::string kernels;         // "" = best for this CPU; scalar | avx2 | avx512 | neon
  int chunk_size = 0;          // 0: the bundle's
  int max_context = 0;         // 0: the bundle's
};

class Model {
 public:
  static std::shared_ptr<Model> load(const std::string& bundle_dir, const ModelOptions& options);

  const Bundle& bundle() const { return bundle_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const PromptBuilder& prompts() const { return *prompts_; }
  bool has_vision() const { return has_vision_; }
  const ImageParams& image_params() const { return image_params_; }
  int chunk_size() const { return chunk_size_; }
  int max_context() const { return max_context_; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  double load_ms() const { return load_ms_; }
  const ModelOptions& options() const { return options_; }
  /// An engine with its own KV cache for a new session, over the model's one copy of the weights.
  std::unique_ptr<Engine> new_engine() const;
  /// Prompt ids of one user turn as add_turn makes them: the chat template (when use_template),
  /// images[i] = {width, height} laid out as image tokens, BOS when `first`.
  std::vector<int32_t> turn_ids(const std::string& text, const std::vector<std::array<int, 2>>& image_sizes,
                                bool first, bool use_template = true) const;

 private:
  Model() = default;
  Bundle bundle_;
  Tokenizer tokenizer_ = Tokenizer::from_json("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}");
  std::unique_ptr<PromptBuilder> prompts_;
  ImageParams image_params_;
  bool has_vision_ = false;
  int chunk_size_ = 0, max_context_ = 0;
  std::vector<int32_t> eos_ids_;
  double load_ms_ = 0.0;
  ModelOptions options_;
  std::shared_ptr<cpu::CpuModel> engines_;  // the packed weights every session's engine shares
};

/// One input chunk of a turn: text, or an RGB8 image (row-major, 3 bytes per pixel).
struct InputChunk {
  bool is_image = false;
  std::string text;
  const uint8_t* rgb = nullptr;
  size_t rgb_size = 0;
  int width = 0, height = 0;

  static InputChunk of_text(std::string t) {
    InputChunk c;
    c.text = std::move(t);
    return c;
  }
  /// A view of a decoded image (which must outlive the turn).
  static InputChunk of_image(const Rgb8Image& im) {
    InputChunk c;
    c.is_image = true;
    c.rgb = im.pixels.data();
    c.rgb_size = im.pixels.size();
    c.width = im.width;
    c.height = im.height;
    return c;
  }
};

/// Timings of one turn and its generation; the JSON has the schema of edgevlm.generate.GenerationStats.
struct Stats {
  std::string backend = "native";
  int prompt_tokens = 0, image_tiles = 0, chunk_size = 0, generated_tokens = 0;
  double preprocess_ms = 0, vision_encode_ms = 0, prefill_ms = 0, ttft_ms = 0, decode_ms = 0, load_ms = 0;
  std::vector<double> prefill_chunks_ms;
  double peak_rss_mb = 0;
  int context_used = 0;
  std::string finish_reason;
  std::string kernels;
  int threads = 0;
  std::string to_json() const;
};

/// Called with each generated token and its text piece (empty for a stop token); return false to
/// cancel (generate then ends with finish_reason "cancelled").
using TokenCallback = std::function<bool(int32_t token, const std::string& piece)>;

class Session {
 public:
  explicit Session(std::shared_ptr<Model> model);

  /// A user turn: the chunks' texts are joined, images become placeholders before the text (the
  /// layout of the chat templates); through the chat template unless `use_template` is false.
  /// Tokenizes, encodes images, prefills. Throws kContextOverflow when it does not fit.
  void add_turn(const std::vector<InputChunk>& chunks, bool use_template = true);
  /// Raw prompt ids, prefilled as they are (benchmarks, tests, servers that build prompts
  /// themselves with Model::turn_ids). The rows holding the image token take the images' features
  /// in order; their count must match the images' tiles.
  void add_tokens(const std::vector<int32_t>& ids, const std::vector<InputChunk>& images = {});
  /// Teacher-forced scoring (perplexity): resets the session, prefills ids [n] in the usual chunks
  /// and returns log p(ids[i + 1] | ids[..i]) for i < n - 1. Afterwards the session is as after
  /// add_tokens(ids): generate() continues the text.
  std::vector<float> score(const std::vector<int32_t>& ids);
  /// Samples up to max_new_tokens from the logits of the last prefill; the generated tokens stay
  /// in the cache so a next turn continues the conversation.
  std::vector<int32_t> generate(const SamplingParams& params, const TokenCallback& on_token = {});
  void reset();
  /// Keeps the first n_tokens of the history (those ids stay in the KV cache) and forgets the
  /// rest, so a prompt that extends that prefix is prefilled from there (add_tokens). n_tokens
  /// must be at most position(). Generate needs a prefill after it.
  void truncate(int n_tokens);
  /// Asks a running generate() to stop after the current token (thread-safe).
  void cancel() { cancel_.store(true); }

  const Stats& stats() const { return stats_; }
  /// The ids in the KV cache, in order; after a generation, also its last token, which the cache
  /// does not hold yet (it is fed first when the conversation goes on, or dropped when it was a
  /// stop token: the next turn's text closes the reply).
  const std::vector<int32_t>& history() const { return history_; }
  const std::vector<float>& last_logits() const { return logits_; }
  int position() const { return pos_; }
  /// Decoded text of ids, streaming-safe (pieces that end inside a UTF-8 sequence are held back).
  std::string decode(const std::vector<int32_t>& ids) const { return model_->tokenizer().decode(ids); }

 private:
  void check_fits(size_t n) const;  // throws kContextOverflow; call before take_pending
  void take_pending(std::vector<int32_t>& ids);
  void new_stats();
  /// Preprocessed images -> features [rows, H]; returns the rows (stats: image_tiles, vision_encode_ms).
  int encode(const std::vector<ImageTiles>& tiles, std::vector<float>& features);
  void prefill_ids(const std::vector<int32_t>& ids, const std::vector<float>& image_rows, int image_token_rows);
  /// Every id inside the vocabulary (or, when allowed, the image placeholder, which may lie outside).
  void check_ids(const std::vector<int32_t>& ids, bool allow_image_token = false) const;

  std::shared_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> history_;
  std::vector<float> logits_;
  bool have_logits_ = false;
  int pos_ = 0;
  int turns_ = 0;
  int32_t pending_ = -1;     // the reply's last token (the end of history_): not yet in the cache
  bool pending_stop_ = false;  // it was a stop token: dropped, not fed, when the conversation goes on
  Stats stats_;
  std::atomic<bool> cancel_{false};
};

/// The process's peak resident set size in MB (getrusage).
double peak_rss_mb();

}  // namespace edgevlm
