// Internal to the tokenizer: the components of a tokenizer.json pipeline (normalizer,
// pre-tokenizer, BPE model, decoder, post-processor), each built from its JSON object by a
// make_* factory that throws Error(kUnsupported) for an unknown "type" and Error(kCorruptFile)
// for a malformed field. Not part of the public API; see core/tokenizer.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgevlm::tok {

using json = nlohmann::json;
using Span = std::pair<std::size_t, std::size_t>;  // byte range [first, second)

/// A piece of text moving through the pipeline; `at_start` marks the piece that begins the input
/// (Metaspace's prepend_scheme "first" needs it).
struct Piece {
  std::string text;
  bool at_start = false;
};

/// A literal string or a regular expression ({"String": ...} / {"Regex": ...} in the file).
class Pattern {
 public:
  virtual ~Pattern() = default;
  /// Appends the non-overlapping, non-empty matches in `s`, left to right.
  virtual void find_all(std::string_view s, std::vector<Span>& out) const = 0;
};
std::unique_ptr<Pattern> make_pattern(const json& j, const std::string& where);
/// The GPT-2 split used by the ByteLevel pre-tokenizer:
/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::unique_ptr<Pattern> make_gpt2_pattern();

/// Replaces every match of `pattern` in `s` by `content`.
std::string replace_all(const Pattern& pattern, std::string_view s, std::string_view content);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const json& j);  // null JSON -> nullptr

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Splits (and may rewrite) every piece; empty pieces are dropped.
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j);  // null JSON -> nullptr

class Decoder {
 public:
  virtual ~Decoder() = default;
  /// HF's decode_chain: rewrites the token strings; the caller joins them.
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const json& j);  // null JSON -> nullptr

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  /// Adds the special tokens of a single sequence (add_special_tokens = true).
  virtual void apply(std::vector<int32_t>& ids) const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(const json& j);  // null JSON -> nullptr

/// The BPE model (byte-level or with byte fallback).
class BpeModel {
 public:
  explicit BpeModel(const json& j);
  /// Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }  // "" for holes

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool has_unk_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  int32_t byte_ids_[256];  // <0xNN> token ids, -1 where absent
};

/// Throws Error(kCorruptFile) "tokenizer.json: <where>: <what>".
[[noreturn]] void corrupt(const std::string& where, const std::string& what);
/// j[key] as T, throwing corrupt() naming `where`.key when absent or of the wrong type.
template <typename T>
T get_field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) corrupt(where, std::string("missing \"") + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    corrupt(where, std::string("\"") + key + "\" has the wrong type");
  }
}
/// j[key] as T, `fallback` when absent or null.
template <typename T>
T get_or(const json& j, const char* key, T fallback, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
  return get_field<T>(j, key, where);
}
/// A string field holding exactly one character (code point).
char32_t get_char(const json& j, const char* key, const std::string& where);

}  // namespace edgevlm::tok
