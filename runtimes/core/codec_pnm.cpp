// Netpbm decoding: P1/P4 (bitmap), P2/P5 (graymap), P3/P6 (pixmap), plain and raw, any maxval
// 1..65535.
//
// As Pillow reads them: header tokens up to 10 characters, '#' comments to the end of the line
// (inside a token they are skipped and the token goes on), one whitespace byte after the last token;
// a sample v becomes round(v / maxval * 255) (half to even), capped at 255; a gray map with maxval
// over 255 is read as 16-bit values round(v / maxval * 65535) and then clipped to 255 (Pillow's
// "I" -> "RGB"); in plain files a sample over maxval fails.
#include <cmath>
#include <cstring>

#include "core/codec.h"

namespace edgevlm::codec {
namespace {

bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// A header token, as Pillow reads it: leading whitespace skipped, ended by one whitespace byte.
uint32_t header_number(Reader& r, const char* what) {
  std::string token;
  while (token.size() <= 10) {
    if (r.left() == 0) break;
    const uint8_t c = r.u8(what);
    if (is_space(c)) {
      if (token.empty()) continue;
      break;
    }
    if (c == '#') {
      while (r.left() > 0) {
        const uint8_t e = r.u8(what);
        if (e == '\r' || e == '\n') break;
      }
      continue;
    }
    token += char(c);
  }
  if (token.empty()) fail("PNM", std::string("header ends before the ") + what);
  if (token.size() > 10) fail("PNM", std::string("header token too long (") + what + ")");
  uint64_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9') fail("PNM", std::string("invalid ") + what + " '" + token + "'");
    v = v * 10 + uint64_t(c - '0');
  }
  if (v > 0xFFFFFFFFull) fail("PNM", std::string("invalid ") + what + " '" + token + "'");
  return uint32_t(v);
}

// The samples of a plain (ASCII) file, comments removed; `bits` reads P1's one-character tokens.
class PlainTokens {
 public:
  PlainTokens(const uint8_t* p, size_t n, bool bits) : p_(p), n_(n), bits_(bits) {}
  bool next(uint32_t* v) {
    for (;;) {
      if (i_ >= n_) return false;
      const uint8_t c = p_[i_];
      if (c == '#') {
        while (i_ < n_ && p_[i_] != '\n' && p_[i_] != '\r') ++i_;
        continue;
      }
      if (is_space(c)) {
        ++i_;
        continue;
      }
      break;
    }
    if (bits_) {
      const uint8_t c = p_[i_++];
      if (c != '0' && c != '1') fail("PNM", std::string("invalid bitmap value '") + char(c) + "'");
      *v = uint32_t(c - '0');
      return true;
    }
    uint64_t value = 0;
    size_t len = 0;
    while (i_ < n_ && !is_space(p_[i_]) && p_[i_] != '#') {
      const uint8_t c = p_[i_++];
      if (c < '0' || c > '9') fail("PNM", "invalid sample value");
      if (++len > 10) fail("PNM", "sample value too long");
      value = value * 10 + uint64_t(c - '0');
    }
    if (value > 0xFFFFFFFFull) fail("PNM", "sample value too large");
    *v = uint32_t(value);
    return true;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
  bool bits_;
};

// round(v / maxval * out_max), half to even, as Python's round() on the same doubles.
uint32_t scale(uint32_t v, uint32_t maxval, uint32_t out_max) {
  const double q = double(v) / double(maxval) * double(out_max);
  return uint32_t(std::nearbyint(q));
}

}  // namespace

Pixels decode_pnm(const uint8_t* data, size_t size) {
  Reader r(data, size, "PNM");
  const uint8_t kind = r.take(2, "magic number")[1] - '0';  // 1..6 (checked by the caller)
  if (kind < 1 || kind > 6) fail("PNM", "unknown magic number");
  if (r.left() > 0 && !is_space(data[2])) fail("PNM", "unknown magic number");
  const bool bitmap = kind == 1 || kind == 4, plain = kind <= 3;
  const int samples = (kind == 3 || kind == 6) ? 3 : 1;
  const uint32_t width = header_number(r, "width"), height = header_number(r, "height");
  uint32_t maxval = 1;
  if (!bitmap) {
    maxval = header_number(r, "maxval");
    if (maxval == 0 || maxval > 65535) fail("PNM", "maxval " + std::to_string(maxval) + " outside 1..65535");
  }
  check_size("PNM", width, height);
  const size_t n = size_t(width) * size_t(height);
  const size_t needed = bitmap && !plain ? (size_t(width) + 7) / 8 * height : n * size_t(samples) * (maxval < 256 ? 1 : 2);
  if (r.left() < (plain ? n * size_t(samples) / (bitmap ? 1 : 2) : needed)) r.truncated("pixel data");  // before allocating
  Pixels out = new_pixels("PNM", width, height, 3);
  // Gray with maxval > 255: 16-bit values first (Pillow's mode "I"), then clipped to 255.
  const uint32_t out_max = (samples == 1 && maxval > 255) ? 65535 : 255;
  uint8_t* dst = out.data.data();
  const auto put = [&](size_t i, uint32_t v) {  // sample i of the image, already scaled
    const uint8_t b = uint8_t(v > 255 ? 255 : v);
    if (samples == 3) {
      dst[i] = b;
    } else {
      dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = b;
    }
  };
  const size_t total = n * size_t(samples);
  if (plain) {
    PlainTokens tokens(data + r.pos(), r.left(), bitmap);
    for (size_t i = 0; i < total; ++i) {
      uint32_t v = 0;
      if (!tokens.next(&v)) fail("PNM", "image data ends early (" + std::to_string(i) + " of " + std::to_string(total) + " samples)");
      if (bitmap) {
        put(i, v ? 0 : 255);
        continue;
      }
      if (v > maxval) fail("PNM", "sample " + std::to_string(v) + " over maxval " + std::to_string(maxval));
      put(i, scale(v, maxval, out_max));
    }
    return out;
  }
  if (bitmap) {  // P4: rows of (width + 7) / 8 bytes, 1 = black
    const size_t stride = (size_t(width) + 7) / 8;
    const uint8_t* p = r.take(stride * height, "pixel data");
    for (size_t y = 0; y < height; ++y) {
      for (size_t x = 0; x < width; ++x) put(y * width + x, ((p[y * stride + x / 8] >> (7 - x % 8)) & 1) ? 0 : 255);
    }
    return out;
  }
  const size_t bytes = maxval < 256 ? 1 : 2;
  const uint8_t* p = r.take(total * bytes, "pixel data");
  if (maxval == 255) {
    for (size_t i = 0; i < total; ++i) put(i, p[i]);
    return out;
  }
  if (samples == 1 && maxval == 65535) {  // Pillow reads these as I;16 directly
    for (size_t i = 0; i < total; ++i) put(i, uint32_t(p[2 * i]) << 8 | p[2 * i + 1]);
    return out;
  }
  std::vector<uint32_t> lut(bytes == 1 ? 256 : 65536);
  for (size_t v = 0; v < lut.size(); ++v) {
    const uint32_t s = scale(uint32_t(v), maxval, out_max);
    lut[v] = s > out_max ? out_max : s;
  }
  for (size_t i = 0; i < total; ++i) put(i, lut[bytes == 1 ? p[i] : (uint32_t(p[2 * i]) << 8 | p[2 * i + 1])]);
  return out;
}

}  // namespace edgevlm::codec
