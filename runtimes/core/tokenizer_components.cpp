// Patterns, normalizers and pre-tokenizers of a tokenizer.json pipeline (see tokenizer_pipeline.h).
#include <algorithm>
#include <functional>

#include "core/error.h"
#include "core/tokenizer_pipeline.h"
#include "core/tokenizer_regex.h"
#include "core/unicode.h"

namespace edgevlm::tok {
namespace {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string type_of(const json& j, const std::string& where) {
  if (!j.is_object()) corrupt(where, "expected an object");
  return get_field<std::string>(j, "type", where);
}

[[noreturn]] void unsupported(const std::string& kind, const std::string& type) {
  fail(ErrorCode::kUnsupported, "tokenizer.json: " + kind + " type \"" + type + "\" is not supported");
}

class LiteralPattern : public Pattern {
 public:
  explicit LiteralPattern(std::string s) : s_(std::move(s)) {}
  void find_all(std::string_view s, std::vector<Span>& out) const override {
    if (s_.empty()) return;
    for (std::size_t pos = s.find(s_); pos != std::string_view::npos; pos = s.find(s_, pos + s_.size()))
      out.emplace_back(pos, pos + s_.size());
  }

 private:
  std::string s_;
};

class Gpt2Pattern : public Pattern {
 public:
  void find_all(std::string_view s, std::vector<Span>& out) const override {
    using namespace unicode;
    std::vector<char32_t> cps;
    std::vector<std::size_t> off;
    cps.reserve(s.size());
    off.reserve(s.size() + 1);
    for (std::size_t p = 0; p < s.size();) {
      char32_t c;
      off.push_back(p);
      p += decode_at(s, p, &c);
      cps.push_back(c);
    }
    off.push_back(s.size());
    const std::size_t n = cps.size();
    auto other = [&](std::size_t k) { return !is_whitespace(cps[k]) && !is_letter(cps[k]) && !is_number(cps[k]); };
    std::size_t i = 0;
    while (i < n) {
      std::size_t end = i;
      if (cps[i] == '\'' && i + 1 < n) {
        const char32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') {
          end = i + 2;
        } else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          end = i + 3;
        }
      }
      if (end == i) {
        const std::size_t j = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;
        std::size_t k = j;
        if (is_letter(cps[j])) {
          while (k < n && is_letter(cps[k])) ++k;
        } else if (is_number(cps[j])) {
          while (k < n && is_number(cps[k])) ++k;
        } else if (other(j)) {
          while (k < n && other(k)) ++k;
        } else {  // whitespace: \s+(?!\S) leaves the last space before a non-space, else \s+
          k = i;
          while (k < n && is_whitespace(cps[k])) ++k;
          if (k < n && k - i >= 2) --k;
        }
        end = k;
      }
      out.emplace_back(off[i], off[end]);
      i = end;
    }
  }
};

class RegexPattern : public Pattern {
 public:
  explicit RegexPattern(const std::string& re) : re_(re) {}
  void find_all(std::string_view s, std::vector<Span>& out) const override { re_.find_all(s, out); }

 private:
  Regex re_;
};

// ---- splitting by matches (HF SplitDelimiterBehavior) -------------------------------------------
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const std::string& b) {
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  corrupt("pre_tokenizer.Split", "unknown behavior \"" + b + "\"");
}

// Splits piece `p` around `matches` and appends the parts to `out`.
void split_piece(const Piece& p, const std::vector<Span>& matches, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  struct Seg {
    std::size_t a, b;
    bool match;
  };
  std::vector<Seg> segs;
  std::size_t prev = 0;
  for (const Span& m : matches) {
    if (m.first > prev) segs.push_back({prev, m.first, invert});
    segs.push_back({m.first, m.second, !invert});
    prev = m.second;
  }
  if (prev < p.text.size()) segs.push_back({prev, p.text.size(), invert});

  std::vector<Seg> parts;
  bool prev_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Seg& s : segs)
        if (!s.match) parts.push_back(s);
      break;
    case Behavior::kIsolated:
      parts = segs;
      break;
    case Behavior::kMergedWithPrevious:
      for (const Seg& s : segs) {
        if (s.match && !prev_match && !parts.empty()) parts.back().b = s.b;
        else parts.push_back(s);
        prev_match = s.match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !prev_match && !parts.empty()) parts.back().a = it->a;
        else parts.push_back(*it);
        prev_match = it->match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    case Behavior::kContiguous:
      for (const Seg& s : segs) {
        if (s.match == prev_match && !parts.empty()) parts.back().b = s.b;
        else parts.push_back(s);
        prev_match = s.match;
      }
      break;
  }
  for (const Seg& s : parts)
    if (s.b > s.a) out.push_back({p.text.substr(s.a, s.b - s.a), p.at_start && s.a == 0});
}

// Applies `fn(piece, out)` to every piece.
void for_each_piece(std::vector<Piece>& pieces, const std::function<void(Piece&, std::vector<Piece>&)>& fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (Piece& p : pieces) fn(p, out);
  pieces.swap(out);
}

// Matches of single characters satisfying `pred`.
std::vector<Span> char_matches(std::string_view s, const std::function<bool(char32_t)>& pred) {
  std::vector<Span> m;
  for (std::size_t p = 0; p < s.size();) {
    char32_t c;
    const std::size_t n = unicode::decode_at(s, p, &c);
    if (pred(c)) m.emplace_back(p, p + n);
    p += n;
  }
  return m;
}

// ---- normalizers --------------------------------------------------------------------------------
class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void apply(std::string& text) const override {
    for (const auto& s : steps_) s->apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : p_(std::move(p)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, p_);
  }

 private:
  std::string p_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::string& text) const override { text = replace_all(*pattern_, text, content_); }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override {
    std::size_t a = 0, b = text.size();
    char32_t c;
    if (left_)
      while (a < b) {
        const std::size_t n = unicode::decode_at(text, a, &c);
        if (!unicode::is_whitespace(c)) break;
        a += n;
      }
    if (right_)
      while (b > a) {
        std::size_t q = b - 1;
        while (q > a && (static_cast<unsigned char>(text[q]) & 0xC0) == 0x80) --q;
        unicode::decode_at(text, q, &c);
        if (!unicode::is_whitespace(c)) break;
        b = q;
      }
    text = text.substr(a, b - a);
  }

 private:
  bool left_, right_;
};

// ---- pre-tokenizers -----------------------------------------------------------------------------
class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& s : steps_) s->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Bytes -> printable characters, GPT-2's bytes_to_unicode.
const std::vector<std::string>& byte_chars() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      unicode::append_utf8(t[b], printable ? char32_t(b) : char32_t(256 + extra++));
    }
    return t;
  }();
  return table;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), split_(make_gpt2_pattern()) {}
  void apply(std::vector<Piece>& pieces) const override {
    const auto& table = byte_chars();
    for_each_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      std::vector<Piece> parts;
      if (use_regex_) {
        std::vector<Span> m;
        split_->find_all(p.text, m);
        split_piece(p, m, Behavior::kIsolated, false, parts);
      } else if (!p.text.empty()) {
        parts.push_back(std::move(p));
      }
      for (Piece& part : parts) {
        std::string mapped;
        mapped.reserve(part.text.size() * 2);
        for (unsigned char b : part.text) mapped += table[b];
        out.push_back({std::move(mapped), part.at_start});
      }
    });
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Pattern> split_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void apply(std::vector<Piece>& pieces) const override {
    for_each_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
      std::vector<Span> m;
      pattern_->find_all(p.text, m);
      split_piece(p, m, behavior_, invert_, out);
    });
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  Behavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void apply(std::vector<Piece>& pieces) const override {
    for_each_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
      split_piece(p, char_matches(p.text, unicode::is_number),
                  individual_ ? Behavior::kIsolated : Behavior::kContiguous, false, out);
    });
  }

 private:
  bool individual_;
};

enum class Prepend { kAlways, kFirst, kNever };

Prepend parse_prepend(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme")) {
    const auto s = get_field<std::string>(j, "prepend_scheme", where);
    if (s == "always") return Prepend::kAlways;
    if (s == "first") return Prepend::kFirst;
    if (s == "never") return Prepend::kNever;
    corrupt(where, "unknown prepend_scheme \"" + s + "\"");
  }
  return get_or<bool>(j, "add_prefix_space", true, where) ? Prepend::kAlways : Prepend::kNever;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, Prepend prepend, bool split)
      : replacement_(replacement), prepend_(prepend), split_(split) {
    unicode::append_utf8(rep_, replacement);
  }
  void apply(std::vector<Piece>& pieces) const override {
    LiteralPattern space(" ");
    for_each_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
      p.text = replace_all(space, p.text, rep_);
      const bool starts = p.text.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && p.at_start)))
        p.text.insert(0, rep_);
      if (split_) {
        split_piece(p, char_matches(p.text, [&](char32_t c) { return c == replacement_; }),
                    Behavior::kMergedWithNext, false, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    });
  }

 private:
  char32_t replacement_;
  std::string rep_;
  Prepend prepend_;
  bool split_;
};

}  // namespace

[[noreturn]] void corrupt(const std::string& where, const std::string& what) {
  fail(ErrorCode::kCorruptFile, "tokenizer.json: " + where + ": " + what);
}

char32_t get_char(const json& j, const char* key, const std::string& where) {
  const auto s = get_field<std::string>(j, key, where);
  char32_t c = 0;
  if (s.empty() || !unicode::is_valid_utf8(s) || unicode::decode_at(s, 0, &c) != s.size())
    corrupt(where, std::string("\"") + key + "\" must be a single character");
  return c;
}

std::unique_ptr<Pattern> make_gpt2_pattern() { return std::make_unique<Gpt2Pattern>(); }

std::unique_ptr<Pattern> make_pattern(const json& j, const std::string& where) {
  if (j.is_object() && j.contains("String")) return std::make_unique<LiteralPattern>(get_field<std::string>(j, "String", where));
  if (j.is_object() && j.contains("Regex")) {
    const auto re = get_field<std::string>(j, "Regex", where);
    if (re == kGpt2Regex) return make_gpt2_pattern();
    return std::make_unique<RegexPattern>(re);
  }
  corrupt(where, "pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

std::string replace_all(const Pattern& pattern, std::string_view s, std::string_view content) {
  std::vector<Span> m;
  pattern.find_all(s, m);
  if (m.empty()) return std::string(s);
  std::string out;
  std::size_t prev = 0;
  for (const Span& sp : m) {
    out.append(s.substr(prev, sp.first - prev));
    out.append(content);
    prev = sp.second;
  }
  out.append(s.substr(prev));
  return out;
}

std::unique_ptr<Normalizer> make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string where = "normalizer";
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const json& s : get_field<json>(j, "normalizers", where)) steps.push_back(make_normalizer(s));
    steps.erase(std::remove(steps.begin(), steps.end(), nullptr), steps.end());
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(get_field<std::string>(j, "prepend", where));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(make_pattern(get_field<json>(j, "pattern", where), where),
                                               get_field<std::string>(j, "content", where));
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(get_or<bool>(j, "strip_left", true, where),
                                             get_or<bool>(j, "strip_right", true, where));
  unsupported("normalizer", type);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string where = "pre_tokenizer";
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const json& s : get_field<json>(j, "pretokenizers", where)) steps.push_back(make_pre_tokenizer(s));
    steps.erase(std::remove(steps.begin(), steps.end(), nullptr), steps.end());
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(get_or<bool>(j, "add_prefix_space", true, where),
                                                   get_or<bool>(j, "use_regex", true, where));
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(make_pattern(get_field<json>(j, "pattern", where), where),
                                               parse_behavior(get_field<std::string>(j, "behavior", where)),
                                               get_or<bool>(j, "invert", false, where));
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(get_or<bool>(j, "individual_digits", false, where));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(get_char(j, "replacement", where), parse_prepend(j, where),
                                                   get_or<bool>(j, "split", true, where));
  unsupported("pre_tokenizer", type);
}

}  // namespace edgevlm::tok
