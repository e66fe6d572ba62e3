// UTF-8 and the few Unicode properties the tokenizer needs: general categories L (letter) and
// N (number) from generated tables (unicode_tables.cpp), and the White_Space property.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace edgevlm::unicode {

/// An inclusive code point range [lo, hi].
struct CodeRange {
  char32_t lo;
  char32_t hi;
};

extern const CodeRange kLetterRanges[];
extern const std::size_t kLetterRanges_size;
extern const CodeRange kNumberRanges[];
extern const std::size_t kNumberRanges_size;

/// General category L* (Lu, Ll, Lt, Lm, Lo): regex \p{L}.
bool is_letter(char32_t cp);
/// General category N* (Nd, Nl, No): regex \p{N}, Rust's char::is_numeric.
bool is_number(char32_t cp);
/// The White_Space property: regex \s (Oniguruma, Unicode mode), Rust's char::is_whitespace.
bool is_whitespace(char32_t cp);

/// True if `s` is well-formed UTF-8 (no surrogates, no overlongs, nothing past U+10FFFF).
bool is_valid_utf8(std::string_view s);

/// Decodes the code point starting at byte `pos` of well-formed UTF-8 `s`; returns its byte length.
inline std::size_t decode_at(std::string_view s, std::size_t pos, char32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  const std::size_t n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t v = b0 & (0x7F >> n);
  for (std::size_t i = 1; i < n; ++i) v = (v << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3F);
  *cp = v;
  return n;
}

/// Byte length of the UTF-8 sequence whose lead byte is `b0` (1 for anything that is not a lead byte).
inline std::size_t sequence_length(unsigned char b0) {
  return b0 < 0xC0 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
}

/// Appends the UTF-8 encoding of `cp` to `out`.
void append_utf8(std::string& out, char32_t cp);

/// Bytes to text the way Rust's String::from_utf8_lossy does: every maximal invalid subsequence
/// becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

}  // namespace edgevlm::unicode
