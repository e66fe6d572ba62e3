// The text tokenizer, read from a Hugging Face `tokenizer.json`, producing the same ids and decoded
// text as HF `tokenizers`. Supported pipelines: byte-level BPE (GPT-2 / SmolLM2 / SmolVLM: ByteLevel
// pre-tokenizer, optionally after Digits or a regex Split in a Sequence) and SentencePiece-style BPE
// with byte fallback (Llama / MobileLLaMA / stories260K: Prepend + Replace normalizers or the
// Metaspace pre-tokenizer; Replace, ByteFallback, Fuse, Strip decoders). Any other component type
// in the file raises Error(kUnsupported) naming it; a malformed file raises Error(kCorruptFile).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgevlm {

namespace tok {
struct TokenizerData;  // the parsed pipeline (core/tokenizer_pipeline.h)
}

/// A loaded tokenizer. Immutable after loading; encode/decode may run from several threads at once.
/// Copies share the loaded data.
class Tokenizer {
 public:
  /// Reads `path` (a tokenizer.json). Error kIo if unreadable, kCorruptFile if malformed,
  /// kUnsupported for a component type this runtime does not implement.
  static Tokenizer from_file(const std::string& path);
  /// Parses tokenizer.json content held in memory; `origin` names it in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& origin = "tokenizer.json");

  /// Token ids of UTF-8 `text` (Error kInvalidArgument if it is not well-formed UTF-8).
  /// Added/special tokens written in the text (e.g. "<|im_start|>", "<image>") are recognized
  /// first, as HF does. `add_special_tokens` = true also applies the file's post-processor (e.g.
  /// TemplateProcessing adding BOS), like HF's `encode(text)` default; false (the default here)
  /// gives only the text's tokens, for callers whose chat template writes BOS itself.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  /// Text of `ids` through the file's decoder, like HF's `decode`. With `skip_special_tokens`,
  /// added tokens marked special are left out. Error kInvalidArgument for an id out of range.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  /// The id of token string `token` (added tokens first, then the model vocabulary), if any.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// The token string of `id`, if any.
  std::optional<std::string> id_to_token(int32_t id) const;
  /// Number of distinct tokens, added tokens included (HF `get_vocab_size(with_added_tokens=True)`).
  int32_t vocab_size() const;
  /// True if `id` is an added token flagged `special` (what skip_special_tokens drops).
  bool is_special(int32_t id) const;

 private:
  explicit Tokenizer(std::shared_ptr<const tok::TokenizerData> data) : data_(std::move(data)) {}
  std::shared_ptr<const tok::TokenizerData> data_;
};

}  // namespace edgevlm
