// Unit tests of the tokenizer pieces that pytest cannot reach through JSON: UTF-8 handling
// (Rust-style lossy decoding, rejection of malformed input) and the Unicode property tables.
// Parity with HF tokenizers is tested in tests/test_native_tokenizer.py.
#include <string>

#include "check.h"
#include "core/error.h"
#include "core/tokenizer.h"
#include "core/unicode.h"

using namespace edgevlm;

namespace {

const char* kTiny = R"({
  "added_tokens": [{"id": 0, "content": "<s>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
    {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3, "\u0120": 4, "\u0120ab": 5},
            "merges": [["a", "b"], ["\u0120", "ab"]]}
})";

void test_utf8() {
  CHECK(unicode::is_valid_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  CHECK(!unicode::is_valid_utf8("\xC3"));
  CHECK(!unicode::is_valid_utf8("\xED\xA0\x80"));      // a surrogate
  CHECK(!unicode::is_valid_utf8("\xC0\xAF"));          // overlong
  CHECK(!unicode::is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  CHECK(unicode::utf8_lossy("a\xF0\x9F\x98" "b") == "a\xEF\xBF\xBD" "b");  // one U+FFFD for a cut sequence
  CHECK(unicode::utf8_lossy("\xFF\xFE") == "\xEF\xBF\xBD\xEF\xBF\xBD");
  std::string s;
  unicode::append_utf8(s, 0x1F600);
  CHECK(s == "\xF0\x9F\x98\x80");
}

void test_tables() {
  CHECK(unicode::is_letter(U'a') && unicode::is_letter(0x65E5) && !unicode::is_letter(U'1'));
  CHECK(unicode::is_number(U'7') && unicode::is_number(0x2155) && !unicode::is_number(U'x'));
  CHECK(unicode::is_whitespace(0x3000) && unicode::is_whitespace(U'\n') && !unicode::is_whitespace(0x200B));
}

void test_tiny_tokenizer() {
  const Tokenizer tok = Tokenizer::from_json(kTiny);
  CHECK(tok.vocab_size() == 6);
  CHECK((tok.encode("ab ab") == std::vector<int32_t>{3, 5}));
  CHECK((tok.encode("ab", true) == std::vector<int32_t>{0, 3}));
  CHECK((tok.encode("<s>ab") == std::vector<int32_t>{0, 3}));
  CHECK(tok.decode({0, 3, 5}) == "<s>ab ab");
  CHECK(tok.decode({0, 3, 5}, true) == "ab ab");
  CHECK(tok.token_to_id("\xC4\xA0" "ab") == 5);
  CHECK(!tok.id_to_token(99).has_value());
  CHECK(tok.is_special(0) && !tok.is_special(3));
  bool threw = false;
  try {
    tok.encode("bad \xC3");
  } catch (const Error& e) {
    threw = e.code() == ErrorCode::kInvalidArgument;
  }
  CHECK(threw);
}

void test_errors() {
  auto code_of = [](const std::string& text) {
    try {
      Tokenizer::from_json(text);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kOk;
  };
  CHECK(code_of("{") == ErrorCode::kCorruptFile);
  CHECK(code_of(R"({"model": {"type": "WordPiece", "vocab": {}}})") == ErrorCode::kUnsupported);
  CHECK(code_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "z"]]}})") == ErrorCode::kCorruptFile);
  CHECK(code_of(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "NFC"}})") ==
        ErrorCode::kUnsupported);
  bool io = false;
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
  } catch (const Error& e) {
    io = e.code() == ErrorCode::kIo;
  }
  CHECK(io);
}

}  // namespace

int main() {
  test_utf8();
  test_tables();
  test_tiny_tokenizer();
  test_errors();
  return edgevlm_test::finish("test_tokenizer");
}
