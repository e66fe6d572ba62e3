// Tokenizer: loading tokenizer.json, added-token matching, and the encode/decode pipelines
// (see tokenizer.h; the components live in tokenizer_components.cpp, tokenizer_decoders.cpp,
// tokenizer_bpe.cpp).
#include "core/tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_set>

#include "core/error.h"
#include "core/tokenizer_pipeline.h"
#include "core/unicode.h"

namespace edgevlm::tok {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

/// A text segment from the added-token split: either an added token (id >= 0) or text.
struct Segment {
  std::string_view text;
  int32_t id;
  bool at_start;
};

/// Finds added tokens in text: at each position the longest token (HF: aho-corasick, leftmost-longest).
class AddedMatcher {
 public:
  void add(const AddedToken* t) {
    if (t->content.empty()) return;
    auto& bucket = by_first_[static_cast<unsigned char>(t->content[0])];
    bucket.push_back(t);
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
  }

  void split(std::string_view s, bool at_start, std::vector<Segment>& out) const {
    std::size_t prev_end = 0, i = 0;
    while (i < s.size()) {
      const AddedToken* hit = nullptr;
      for (const AddedToken* t : by_first_[static_cast<unsigned char>(s[i])]) {
        if (s.compare(i, t->content.size(), t->content) == 0) {
          hit = t;
          break;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      std::size_t start = i, stop = i + hit->content.size();
      i = stop;
      if (hit->single_word && (word_before(s, start) || word_after(s, stop))) continue;
      if (hit->lstrip)
        while (start > prev_end) {
          const std::size_t q = char_start_before(s, start);
          char32_t c;
          unicode::decode_at(s, q, &c);
          if (!unicode::is_whitespace(c)) break;
          start = q;
        }
      if (hit->rstrip)
        while (stop < s.size()) {
          char32_t c;
          const std::size_t n = unicode::decode_at(s, stop, &c);
          if (!unicode::is_whitespace(c)) break;
          stop += n;
        }
      if (start > prev_end) out.push_back({s.substr(prev_end, start - prev_end), -1, at_start && prev_end == 0});
      out.push_back({s.substr(start, stop - start), hit->id, false});
      prev_end = stop;
      i = std::max(i, stop);
    }
    if (prev_end < s.size()) out.push_back({s.substr(prev_end), -1, at_start && prev_end == 0});
  }

 private:
  static std::size_t char_start_before(std::string_view s, std::size_t pos) {
    std::size_t q = pos - 1;
    while (q > 0 && (static_cast<unsigned char>(s[q]) & 0xC0) == 0x80) --q;
    return q;
  }
  static bool is_word(char32_t c) { return c == '_' || unicode::is_letter(c) || unicode::is_number(c); }
  static bool word_before(std::string_view s, std::size_t pos) {
    if (pos == 0) return false;
    char32_t c;
    unicode::decode_at(s, char_start_before(s, pos), &c);
    return is_word(c);
  }
  static bool word_after(std::string_view s, std::size_t pos) {
    if (pos >= s.size()) return false;
    char32_t c;
    unicode::decode_at(s, pos, &c);
    return is_word(c);
  }

  std::vector<const AddedToken*> by_first_[256];
};

struct TokenizerData {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;  // in file order
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, const AddedToken*> added_by_id;
  AddedMatcher raw_matcher;         // tokens with normalized = false, matched in the input text
  AddedMatcher normalized_matcher;  // tokens with normalized = true, matched after normalization
  int32_t vocab_size = 0;
};

namespace {

std::shared_ptr<TokenizerData> parse(std::string_view text, const std::string& origin) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(ErrorCode::kCorruptFile, origin + ": not valid JSON (" + e.what() + ")");
  }
  try {
    if (!root.is_object()) corrupt("(root)", "expected an object");
    auto d = std::make_shared<TokenizerData>();
    auto field = [&](const char* key) { return root.contains(key) ? root.at(key) : json(); };
    d->normalizer = make_normalizer(field("normalizer"));
    d->pre_tokenizer = make_pre_tokenizer(field("pre_tokenizer"));
    d->model = std::make_unique<BpeModel>(get_field<json>(root, "model", "(root)"));
    d->post_processor = make_post_processor(field("post_processor"));
    d->decoder = make_decoder(field("decoder"));

    const json added = field("added_tokens");
    if (!added.is_null() && !added.is_array()) corrupt("added_tokens", "expected an array");
    d->added.reserve(added.size());
    for (const json& a : added) {
      const std::string where = "added_tokens[" + std::to_string(d->added.size()) + "]";
      AddedToken t;
      t.content = get_field<std::string>(a, "content", where);
      const int64_t id = get_field<int64_t>(a, "id", where);
      if (id < 0 || id >= (int64_t(1) << 31) - 1) corrupt(where, "id out of range");
      t.id = int32_t(id);
      t.single_word = get_or<bool>(a, "single_word", false, where);
      t.lstrip = get_or<bool>(a, "lstrip", false, where);
      t.rstrip = get_or<bool>(a, "rstrip", false, where);
      t.special = get_or<bool>(a, "special", false, where);
      t.normalized = get_or<bool>(a, "normalized", !t.special, where);
      if (!unicode::is_valid_utf8(t.content)) corrupt(where, "content is not valid UTF-8");
      d->added.push_back(std::move(t));
    }
    std::unordered_set<std::string> tokens;
    for (const auto& [tok, id] : d->model->vocab()) tokens.insert(tok);
    for (const AddedToken& t : d->added) {
      d->added_by_content[t.content] = t.id;
      d->added_by_id[t.id] = &t;
      (t.normalized ? d->normalized_matcher : d->raw_matcher).add(&t);
      tokens.insert(t.content);
    }
    d->vocab_size = int32_t(tokens.size());
    return d;
  } catch (const Error& e) {
    if (origin == "tokenizer.json") throw;
    const std::string msg = e.what();
    const std::string prefix = "tokenizer.json: ";
    throw Error(e.code(), origin + ": " + (msg.compare(0, prefix.size(), prefix) == 0 ? msg.substr(prefix.size()) : msg));
  }
}

}  // namespace
}  // namespace edgevlm::tok

namespace edgevlm {

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::kIo, path + ": cannot open tokenizer file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(ErrorCode::kIo, path + ": read error");
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& origin) {
  return Tokenizer(tok::parse(json_text, origin));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!unicode::is_valid_utf8(text)) fail(ErrorCode::kInvalidArgument, "tokenizer: input text is not valid UTF-8");
  const tok::TokenizerData& d = *data_;
  std::vector<int32_t> ids;
  std::vector<tok::Segment> raw, norm;
  std::vector<tok::Piece> pieces;
  d.raw_matcher.split(text, true, raw);
  for (const tok::Segment& seg : raw) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string normalized(seg.text);
    if (d.normalizer) d.normalizer->apply(normalized);
    norm.clear();
    d.normalized_matcher.split(normalized, seg.at_start, norm);
    for (const tok::Segment& part : norm) {
      if (part.id >= 0) {
        ids.push_back(part.id);
        continue;
      }
      pieces.assign(1, tok::Piece{std::string(part.text), part.at_start});
      if (d.pre_tokenizer) d.pre_tokenizer->apply(pieces);
      for (const tok::Piece& p : pieces) d.model->tokenize(p.text, ids);
    }
  }
  if (add_special_tokens && d.post_processor) d.post_processor->apply(ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const tok::TokenizerData& d = *data_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = d.added_by_id.find(id);
    if (it != d.added_by_id.end()) {
      if (!(skip_special_tokens && it->second->special)) tokens.push_back(it->second->content);
      continue;
    }
    const auto& table = d.model->id_to_token();
    if (id < 0 || std::size_t(id) >= table.size() || table[std::size_t(id)].empty()) continue;  // as HF: skipped
    const std::string& t = table[std::size_t(id)];
    if (skip_special_tokens) {
      auto a = d.added_by_content.find(t);
      if (a != d.added_by_content.end() && d.added_by_id.at(a->second)->special) continue;
    }
    tokens.push_back(t);
  }
  if (!d.decoder) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  d.decoder->apply(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  auto a = data_->added_by_content.find(key);
  if (a != data_->added_by_content.end()) return a->second;
  auto v = data_->model->vocab().find(key);
  if (v != data_->model->vocab().end()) return v->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  auto a = data_->added_by_id.find(id);
  if (a != data_->added_by_id.end()) return a->second->content;
  const auto& table = data_->model->id_to_token();
  if (id >= 0 && std::size_t(id) < table.size() && !table[std::size_t(id)].empty()) return table[std::size_t(id)];
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return data_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  auto a = data_->added_by_id.find(id);
  return a != data_->added_by_id.end() && a->second->special;
}

}  // namespace edgevlm
