// Decoders and post-processors of a tokenizer.json pipeline (see tokenizer_pipeline.h).
#include <algorithm>

#include "core/error.h"
#include "core/tokenizer_pipeline.h"
#include "core/unicode.h"

namespace edgevlm::tok {
namespace {

[[noreturn]] void unsupported(const std::string& kind, const std::string& type) {
  fail(ErrorCode::kUnsupported, "tokenizer.json: " + kind + " type \"" + type + "\" is not supported");
}

std::vector<char32_t> to_chars(std::string_view s) {
  std::vector<char32_t> cps;
  for (std::size_t p = 0; p < s.size();) {
    char32_t c;
    p += unicode::decode_at(s, p, &c);
    cps.push_back(c);
  }
  return cps;
}

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Byte-level characters back to bytes; a token with any character outside the map keeps its own
// UTF-8 bytes. The bytes of all tokens become one string (invalid UTF-8 -> U+FFFD).
class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    std::fill(std::begin(to_byte_), std::end(to_byte_), -1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_byte_[printable ? b : 256 + extra++] = b;
    }
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const std::size_t mark = bytes.size();
      bool ok = true;
      for (std::size_t p = 0; p < t.size() && ok;) {
        char32_t c;
        p += unicode::decode_at(t, p, &c);
        if (c < 324 && to_byte_[c] >= 0) bytes.push_back(static_cast<char>(to_byte_[c]));
        else ok = false;
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, unicode::utf8_lossy(bytes));
  }

 private:
  int to_byte_[324];
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = replace_all(*pattern_, t, content_);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become their UTF-8 text, or one U+FFFD per byte if not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    std::size_t nbytes = 0;
    auto flush = [&] {
      if (nbytes == 0) return;
      if (unicode::is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (std::size_t i = 0; i < nbytes; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      nbytes = 0;
    };
    for (std::string& t : tokens) {
      int b = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') b = parse_hex(t[3], t[4]);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse_hex(char a, char b) {
    if (a == '+') return hex(b);  // Rust's from_str_radix takes a leading '+'
    const int h = hex(a), l = hex(b);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of `content` from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop) : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      const std::vector<char32_t> cps = to_chars(t);
      std::size_t a = 0, b = cps.size();
      while (a < b && a < start_ && cps[a] == content_) ++a;
      for (std::size_t i = 0; i < stop_ && b > a && cps[b - 1] == content_; ++i) --b;
      std::string s;
      for (std::size_t i = a; i < b; ++i) unicode::append_utf8(s, cps[i]);
      t = std::move(s);
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

// The replacement character back to spaces; in the first token it is dropped instead (the
// prefix the pre-tokenizer added), unless prepend_scheme is "never".
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool prepends) : replacement_(replacement), prepends_(prepends) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string s;
      for (char32_t c : to_chars(tokens[i])) {
        if (c != replacement_) unicode::append_utf8(s, c);
        else if (i != 0 || !prepends_) s.push_back(' ');
      }
      tokens[i] = std::move(s);
    }
  }

 private:
  char32_t replacement_;
  bool prepends_;
};

// ---- post-processors ----------------------------------------------------------------------------
class NoopProcessor : public PostProcessor {
 public:
  void apply(std::vector<int32_t>&) const override {}
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& s : steps_) s->apply(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// The single-sequence template: ids before and after the sequence.
class TemplateProcessor : public PostProcessor {
 public:
  TemplateProcessor(std::vector<int32_t> head, std::vector<int32_t> tail) : head_(std::move(head)), tail_(std::move(tail)) {}
  void apply(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), head_.begin(), head_.end());
    ids.insert(ids.end(), tail_.begin(), tail_.end());
  }

 private:
  std::vector<int32_t> head_, tail_;
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where) {
  const json& special = get_field<json>(j, "special_tokens", where);
  std::vector<int32_t> head, tail;
  bool seen_sequence = false;
  for (const json& item : get_field<json>(j, "single", where)) {
    if (item.is_object() && item.contains("Sequence")) {
      if (seen_sequence) corrupt(where, "single template names the sequence twice");
      seen_sequence = true;
    } else if (item.is_object() && item.contains("SpecialToken")) {
      const auto name = get_field<std::string>(item.at("SpecialToken"), "id", where + ".single");
      if (!special.is_object() || !special.contains(name)) corrupt(where, "special token \"" + name + "\" is not in special_tokens");
      for (const json& id : get_field<json>(special.at(name), "ids", where + ".special_tokens")) {
        if (!id.is_number_integer()) corrupt(where, "special token ids must be integers");
        (seen_sequence ? tail : head).push_back(id.get<int32_t>());
      }
    } else {
      corrupt(where, "template items must be Sequence or SpecialToken");
    }
  }
  return std::make_unique<TemplateProcessor>(std::move(head), std::move(tail));
}

// Bert/Roberta: [cls] A [sep], the tokens given as [string, id].
std::unique_ptr<PostProcessor> make_cls_sep(const json& j, const std::string& where) {
  auto id_of = [&](const char* key) {
    const json& v = get_field<json>(j, key, where);
    if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer()) corrupt(where, std::string(key) + " must be [token, id]");
    return v[1].get<int32_t>();
  };
  return std::make_unique<TemplateProcessor>(std::vector<int32_t>{id_of("cls")}, std::vector<int32_t>{id_of("sep")});
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string where = "decoder";
  if (!j.is_object()) corrupt(where, "expected an object");
  const std::string type = get_field<std::string>(j, "type", where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const json& s : get_field<json>(j, "decoders", where)) {
      if (auto d = make_decoder(s)) steps.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(make_pattern(get_field<json>(j, "pattern", where), where),
                                            get_field<std::string>(j, "content", where));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const auto start = get_field<int64_t>(j, "start", where), stop = get_field<int64_t>(j, "stop", where);
    if (start < 0 || stop < 0) corrupt(where, "Strip start/stop must not be negative");
    return std::make_unique<StripDecoder>(get_char(j, "content", where), std::size_t(start), std::size_t(stop));
  }
  if (type == "Metaspace") {
    bool prepends = get_or<bool>(j, "add_prefix_space", true, where);
    if (j.contains("prepend_scheme")) prepends = get_field<std::string>(j, "prepend_scheme", where) != "never";
    return std::make_unique<MetaspaceDecoder>(get_char(j, "replacement", where), prepends);
  }
  unsupported("decoder", type);
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string where = "post_processor";
  if (!j.is_object()) corrupt(where, "expected an object");
  const std::string type = get_field<std::string>(j, "type", where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (const json& s : get_field<json>(j, "processors", where)) {
      if (auto p = make_post_processor(s)) steps.push_back(std::move(p));
    }
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "TemplateProcessing") return make_template(j, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") return make_cls_sep(j, where);
  unsupported("post_processor", type);
}

}  // namespace edgevlm::tok
