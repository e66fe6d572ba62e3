// PNG decoding (ISO/IEC 15948): every color type and bit depth, palette and tRNS transparency,
// Adam7 interlacing, filters 0-4, CRC-32 of every chunk and the zlib Adler-32 checked.
//
// The 8-bit result is what Pillow gives for the file and what the Python loader then sees:
// 1/2/4-bit gray scaled to 0-255 (x255, x85, x17); 16-bit gray clipped to 255 (Pillow's I;16 -> L);
// 16-bit color, gray+alpha and alpha reduced to their high byte. A gray or RGB tRNS key is compared
// with the 8-bit value (key & 255; 1-bit: any nonzero key means white), as Pillow does. Palette
// indices past PLTE are black; tRNS alphas apply to the first entries, even past PLTE.
#include <cstdlib>
#include <cstring>

#include "core/codec.h"

namespace edgevlm::codec {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

struct Header {
  int width = 0, height = 0;
  int depth = 0, color_type = 0, interlace = 0;
  int samples = 1;  // per pixel: gray 1, RGB 3, palette 1, gray+alpha 2, RGBA 4
  int bits_per_pixel() const { return samples * depth; }
  size_t row_bytes(int w) const { return (size_t(w) * size_t(bits_per_pixel()) + 7) / 8; }
};

struct Transparency {
  bool present = false;
  int key[3] = {0, 0, 0};  // 8-bit key for gray (key[0]) or RGB
};

struct Pass {  // an Adam7 pass: pixels (x0 + i * dx, y0 + j * dy)
  int x0, y0, dx, dy;
};
constexpr Pass kAdam7[7] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
constexpr Pass kWhole = {0, 0, 1, 1};

int pass_size(int n, int start, int step) { return n > start ? (n - start + step - 1) / step : 0; }

Header parse_ihdr(const uint8_t* p, uint32_t len) {
  if (len != 13) fail("PNG", "IHDR chunk of " + std::to_string(len) + " bytes (expected 13)");
  Header h;
  const uint32_t w = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  const uint32_t ht = uint32_t(p[4]) << 24 | uint32_t(p[5]) << 16 | uint32_t(p[6]) << 8 | p[7];
  h.depth = p[8];
  h.color_type = p[9];
  h.interlace = p[12];
  if (w == 0 || ht == 0 || w > 0x7FFFFFFFu || ht > 0x7FFFFFFFu) {
    fail("PNG", "invalid size " + std::to_string(w) + "x" + std::to_string(ht));
  }
  bool ok = false;
  switch (h.color_type) {
    case 0: ok = h.depth == 1 || h.depth == 2 || h.depth == 4 || h.depth == 8 || h.depth == 16; h.samples = 1; break;
    case 2: ok = h.depth == 8 || h.depth == 16; h.samples = 3; break;
    case 3: ok = h.depth == 1 || h.depth == 2 || h.depth == 4 || h.depth == 8; h.samples = 1; break;
    case 4: ok = h.depth == 8 || h.depth == 16; h.samples = 2; break;
    case 6: ok = h.depth == 8 || h.depth == 16; h.samples = 4; break;
    default: break;
  }
  if (!ok) {
    fail("PNG", "invalid bit depth " + std::to_string(h.depth) + " for color type " + std::to_string(h.color_type));
  }
  if (p[10] != 0) fail("PNG", "unknown compression method " + std::to_string(p[10]));
  if (p[11] != 0) fail("PNG", "unknown filter method " + std::to_string(p[11]));
  if (h.interlace > 1) fail("PNG", "unknown interlace method " + std::to_string(h.interlace));
  h.width = int(w);
  h.height = int(ht);
  return h;
}

inline int paeth(int a, int b, int c) {  // of left a, up b, upper-left c: the nearest to a + b - c
  const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
  return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

// Paeth and average filters with the left and upper-left bytes of each of the B channels kept in
// registers (the row's dependency chain then runs through registers, not memory).
template <int B>
void unpaeth(uint8_t* row, const uint8_t* prev, size_t n) {
  int a[B], c[B];
  for (int k = 0; k < B; ++k) a[k] = row[k] = uint8_t(row[k] + prev[k]), c[k] = prev[k];
  for (size_t i = B; i < n; i += B) {
    for (int k = 0; k < B; ++k) {
      const int b = prev[i + k];
      a[k] = row[i + k] = uint8_t(row[i + k] + paeth(a[k], b, c[k]));
      c[k] = b;
    }
  }
}
template <int B>
void unaverage(uint8_t* row, const uint8_t* prev, size_t n) {
  int a[B];
  for (int k = 0; k < B; ++k) a[k] = row[k] = uint8_t(row[k] + (prev[k] >> 1));
  for (size_t i = B; i < n; i += B) {
    for (int k = 0; k < B; ++k) a[k] = row[i + k] = uint8_t(row[i + k] + ((a[k] + prev[i + k]) >> 1));
  }
}

// Undoes the filter of one row in place; `prev` is the previous unfiltered row of the pass (all
// zeros for the first). Bytes left of the row are zero.
void unfilter(uint8_t filter, uint8_t* row, const uint8_t* prev, size_t n, size_t bpp) {
  switch (filter) {
    case 0:
      return;
    case 1:
      for (size_t i = bpp; i < n; ++i) row[i] = uint8_t(row[i] + row[i - bpp]);
      return;
    case 2:
      for (size_t i = 0; i < n; ++i) row[i] = uint8_t(row[i] + prev[i]);
      return;
    case 3:
    case 4:
      if (n % bpp == 0) {  // always, except a short final pixel that cannot occur for whole-byte pixels
        const bool avg = filter == 3;
        switch (bpp) {
          case 1: return avg ? unaverage<1>(row, prev, n) : unpaeth<1>(row, prev, n);
          case 2: return avg ? unaverage<2>(row, prev, n) : unpaeth<2>(row, prev, n);
          case 3: return avg ? unaverage<3>(row, prev, n) : unpaeth<3>(row, prev, n);
          case 4: return avg ? unaverage<4>(row, prev, n) : unpaeth<4>(row, prev, n);
          case 6: return avg ? unaverage<6>(row, prev, n) : unpaeth<6>(row, prev, n);
          case 8: return avg ? unaverage<8>(row, prev, n) : unpaeth<8>(row, prev, n);
          default: break;
        }
      }
      for (size_t i = 0; i < n; ++i) {
        const int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
        row[i] = uint8_t(row[i] + (filter == 3 ? (a + b) >> 1 : paeth(a, b, c)));
      }
      return;
    default:
      fail("PNG", "invalid filter type " + std::to_string(filter));
  }
}

class RowConverter {
 public:
  RowConverter(const Header& h, const uint8_t* palette_rgba, const Transparency& t, int out_channels)
      : h_(h), palette_(palette_rgba), t_(t), out_(out_channels) {}

  // One unfiltered row of n pixels -> n pixels of out_channels at dst (stride `step` pixels).
  void convert(const uint8_t* src, int n, uint8_t* dst, int step) const {
    const int oc = out_, dstep = oc * step;
    const int ct = h_.color_type, d = h_.depth;
    if (ct == 0 || ct == 3) {
      for (int x = 0; x < n; ++x, dst += dstep) {
        const int s = sample(src, x);
        if (ct == 3) {
          const uint8_t* e = palette_ + s * 4;
          dst[0] = e[0], dst[1] = e[1], dst[2] = e[2];
          if (oc == 4) dst[3] = e[3];
          continue;
        }
        const int v = d == 16 ? (s < 255 ? s : 255) : d == 1 ? s * 255 : d == 2 ? s * 85 : d == 4 ? s * 17 : s;
        dst[0] = dst[1] = dst[2] = uint8_t(v);
        if (oc == 4) dst[3] = v == t_.key[0] ? 0 : 255;
      }
      return;
    }
    const int ch = h_.samples, bytes = d / 8;  // 8 or 16 bits from here on; 16-bit keeps the high byte
    if (bytes == 1 && step == 1 && ch == oc) {  // RGB or RGBA as stored
      std::memcpy(dst, src, size_t(n) * size_t(oc));
      return;
    }
    for (int x = 0; x < n; ++x, dst += dstep) {
      const uint8_t* p = src + size_t(x) * size_t(ch * bytes);
      if (ct == 2) {
        dst[0] = p[0], dst[1] = p[bytes], dst[2] = p[2 * bytes];
        if (oc == 4) dst[3] = dst[0] == t_.key[0] && dst[1] == t_.key[1] && dst[2] == t_.key[2] ? 0 : 255;
      } else if (ct == 4) {
        dst[0] = dst[1] = dst[2] = p[0];
        dst[3] = p[bytes];
      } else {
        dst[0] = p[0], dst[1] = p[bytes], dst[2] = p[2 * bytes], dst[3] = p[3 * bytes];
      }
    }
  }

 private:
  int sample(const uint8_t* row, int x) const {
    switch (h_.depth) {
      case 8: return row[x];
      case 16: return row[2 * x] << 8 | row[2 * x + 1];
      default: {
        const int d = h_.depth, bit = x * d;
        return (row[bit >> 3] >> (8 - d - (bit & 7))) & ((1 << d) - 1);
      }
    }
  }
  const Header& h_;
  const uint8_t* palette_;
  const Transparency& t_;
  int out_;
};

}  // namespace

Pixels decode_png(const uint8_t* data, size_t size) {
  Reader r(data, size, "PNG");
  if (size < 8 || std::memcmp(data, kSignature, 8) != 0) fail("PNG", "bad signature");
  r.skip(8, "signature");
  Header h;
  bool have_header = false, have_palette = false, idat_done = false;
  int palette_entries = 0;
  uint8_t palette[256 * 4];
  for (int i = 0; i < 256; ++i) palette[i * 4] = palette[i * 4 + 1] = palette[i * 4 + 2] = 0, palette[i * 4 + 3] = 255;
  Transparency trns;
  std::vector<uint8_t> compressed;
  for (;;) {
    if (r.left() == 0 && !compressed.empty()) break;  // no IEND, but the image data is all there
    const uint32_t len = r.be32("chunk length");
    const uint8_t* type = r.take(4, "chunk type");
    const std::string name(reinterpret_cast<const char*>(type), 4);
    for (char c : name) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) fail("PNG", "corrupt chunk type");
    }
    if (len > 0x7FFFFFFFu) fail("PNG", "chunk " + name + " has an invalid length");
    if (len > r.left()) r.truncated(("chunk " + name).c_str());
    const uint8_t* payload = r.take(len, "chunk data");
    const uint32_t crc = r.be32(("CRC of chunk " + name).c_str());
    if (crc32(type, 4 + size_t(len)) != crc) fail("PNG", "CRC mismatch in chunk " + name);
    if (!have_header) {
      if (name == "CgBI") fail("PNG", "Apple's CgBI variant (an iOS-optimized PNG) is not supported");
      if (name != "IHDR") fail("PNG", "first chunk is " + name + ", not IHDR");
      h = parse_ihdr(payload, len);
      check_size("PNG", h.width, h.height);  // TooLarge before any allocation
      have_header = true;
      continue;
    }
    if (name == "IEND") break;
    if (name == "IDAT") {
      if (idat_done) continue;  // a second run of IDAT chunks: ignored, as Pillow does
      compressed.insert(compressed.end(), payload, payload + len);
      continue;
    }
    if (!compressed.empty()) idat_done = true;
    if (idat_done) continue;  // PLTE / tRNS after the image data do not apply
    if (name == "PLTE") {
      if (len % 3 != 0 || len == 0 || len > 768) fail("PNG", "PLTE chunk of " + std::to_string(len) + " bytes");
      palette_entries = int(len / 3);
      for (int i = 0; i < palette_entries; ++i) std::memcpy(palette + i * 4, payload + i * 3, 3);
      have_palette = true;
    } else if (name == "tRNS") {
      if (h.color_type == 3) {
        if (len > 256) fail("PNG", "tRNS chunk with more than 256 entries");
        for (uint32_t i = 0; i < len; ++i) palette[i * 4 + 3] = payload[i];
        trns.present = true;
      } else if (h.color_type == 0 || h.color_type == 2) {
        const uint32_t need = h.color_type == 0 ? 2 : 6;
        if (len < need) fail("PNG", "tRNS chunk truncated");
        for (uint32_t c = 0; c < need / 2; ++c) {
          const int key = payload[2 * c] << 8 | payload[2 * c + 1];
          trns.key[c] = h.depth == 1 ? (key ? 255 : 0) : key & 255;
        }
        trns.present = true;
      }
    }
  }
  if (!have_header) fail("PNG", "no IHDR chunk");
  if (compressed.empty()) fail("PNG", "no image data (IDAT)");
  if (h.color_type == 3 && !have_palette) fail("PNG", "palette image without a PLTE chunk");

  // The filtered rows of every pass, back to back: its size is known, so the inflater stops there.
  const bool interlaced = h.interlace == 1;
  const Pass* passes = interlaced ? kAdam7 : &kWhole;
  const int npasses = interlaced ? 7 : 1;
  size_t total = 0;
  for (int p = 0; p < npasses; ++p) {
    const int pw = pass_size(h.width, passes[p].x0, passes[p].dx), ph = pass_size(h.height, passes[p].y0, passes[p].dy);
    if (pw > 0 && ph > 0) total += size_t(ph) * (1 + h.row_bytes(pw));
  }
  if (total / 1032 > compressed.size()) {  // before allocating `total` (see zlib_decompress)
    fail("PNG", "image data too short for a " + std::to_string(h.width) + "x" + std::to_string(h.height) +
                    " image (truncated)");
  }
  std::vector<uint8_t> raw(total);
  zlib_decompress(compressed.data(), compressed.size(), raw.data(), raw.size(), "PNG", "image data");
  compressed = std::vector<uint8_t>();

  const int out_channels = (h.color_type == 4 || h.color_type == 6 || trns.present) ? 4 : 3;
  Pixels out = new_pixels("PNG", h.width, h.height, out_channels);
  const RowConverter conv(h, palette, trns, out_channels);
  const size_t bpp = size_t(h.bits_per_pixel() >= 8 ? h.bits_per_pixel() / 8 : 1);
  uint8_t* row = raw.data();
  for (int p = 0; p < npasses; ++p) {
    const Pass& ps = passes[p];
    const int pw = pass_size(h.width, ps.x0, ps.dx), ph = pass_size(h.height, ps.y0, ps.dy);
    if (pw == 0 || ph == 0) continue;
    const size_t n = h.row_bytes(pw);
    std::vector<uint8_t> zeros(n, 0);
    const uint8_t* prev = zeros.data();
    for (int y = 0; y < ph; ++y) {
      unfilter(row[0], row + 1, prev, n, bpp);
      uint8_t* dst = out.data.data() + (size_t(ps.y0 + y * ps.dy) * size_t(h.width) + size_t(ps.x0)) * size_t(out_channels);
      conv.convert(row + 1, pw, dst, ps.dx);
      prev = row + 1;
      row += 1 + n;
    }
  }
  return out;
}

}  // namespace edgevlm::codec
