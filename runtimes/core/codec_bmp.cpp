// BMP decoding: headers of 12 (OS/2 1.x), 40, 52, 56, 64, 108 and 124 bytes; 1/4/8-bit palettes,
// 16-bit 5-5-5 and BI_BITFIELDS 5-6-5, 24-bit, 32-bit BI_RGB (the fourth byte ignored) and the
// BI_BITFIELDS byte layouts Pillow reads (with alpha where the masks give one); RLE8 and RLE4;
// bottom-up and top-down rows.
//
// The pixels are Pillow's: 5- and 6-bit channels expand as v * 255 / 31 (or / 63), rounded down;
// a palette index past the palette is black; a palette that is the gray ramp 0, 1, 2, ... (or
// black, white for two colors) is dropped and the data read as gray values (or as 1-bit), as
// Pillow does; RLE streams are expanded with Pillow's rules for deltas, row ends and short rows.
#include <algorithm>
#include <cstring>

#include "core/codec.h"

namespace edgevlm::codec {
namespace {

enum class PaletteKind { kColor, kGray1, kGrayL };  // Pillow's "P", "1" and "L" modes

struct Info {
  uint32_t header_size = 0;
  int64_t width = 0, height = 0;
  bool top_down = false;
  int bits = 0;
  uint32_t compression = 0;
  uint64_t colors = 0;
  uint32_t masks[4] = {0, 0, 0, 0};  // r, g, b, a (BI_BITFIELDS)
  size_t palette_at = 0;
  size_t palette_entry = 4;
};

constexpr uint32_t kRaw = 0, kRle8 = 1, kRle4 = 2, kBitfields = 3;

// 32-bit BI_BITFIELDS masks Pillow reads: each channel one byte of the little-endian word.
struct Layout32 {
  uint32_t r, g, b, a;
  bool alpha;
};
constexpr Layout32 kLayouts32[] = {
    {0xFF0000, 0xFF00, 0xFF, 0x0, false},           {0xFF000000, 0xFF0000, 0xFF00, 0x0, false},
    {0xFF000000, 0xFF00, 0xFF, 0x0, false},         {0xFF000000, 0xFF0000, 0xFF00, 0xFF, true},
    {0xFF, 0xFF00, 0xFF0000, 0xFF000000, true},     {0xFF0000, 0xFF00, 0xFF, 0xFF000000, true},
    {0xFF000000, 0xFF00, 0xFF, 0xFF0000, true},
};

int shift_of(uint32_t mask) {
  int s = 0;
  while (mask && !(mask & 1)) mask >>= 1, ++s;
  return s;
}

Info parse_headers(Reader& r) {
  Info in;
  r.skip(2, "file header");
  r.skip(8, "file header");
  size_t offset = r.le32("file header");
  in.header_size = r.le32("info header");
  const size_t header_at = 14;
  if (in.header_size == 12) {
    in.width = r.le16("info header");
    in.height = r.le16("info header");
    r.skip(2, "info header");
    in.bits = int(r.le16("info header"));
    in.palette_entry = 3;
  } else if (in.header_size == 40 || in.header_size == 52 || in.header_size == 56 || in.header_size == 64 ||
             in.header_size == 108 || in.header_size == 124) {
    const uint8_t* h = r.take(in.header_size - 4, "info header");
    const auto u32 = [&](int at) { return uint32_t(h[at]) | uint32_t(h[at + 1]) << 8 | uint32_t(h[at + 2]) << 16 | uint32_t(h[at + 3]) << 24; };
    in.width = u32(0);
    const uint32_t height = u32(4);
    in.top_down = h[7] == 0xFF;
    in.height = in.top_down ? int64_t(0x100000000ll - height) : int64_t(height);
    in.bits = h[10] | h[11] << 8;
    in.compression = u32(12);
    in.colors = u32(28);
    if (in.compression == kBitfields) {
      if (in.header_size >= 52) {
        for (int i = 0; i < 3; ++i) in.masks[i] = u32(36 + 4 * i);
        if (in.header_size >= 56) in.masks[3] = u32(48);
      } else {
        for (int i = 0; i < 3; ++i) in.masks[i] = r.le32("bitfield masks");
      }
    }
  } else {
    fail("BMP", "unsupported header size " + std::to_string(in.header_size));
  }
  in.palette_at = r.pos();
  if (in.colors == 0) in.colors = in.bits < 64 ? uint64_t(1) << in.bits : 0;
  if (offset == header_at + in.header_size && in.bits <= 8) offset += in.palette_entry * in.colors;
  if (!(in.bits == 1 || in.bits == 4 || in.bits == 8 || in.bits == 16 || in.bits == 24 || in.bits == 32)) {
    fail("BMP", "unsupported pixel depth " + std::to_string(in.bits));
  }
  check_size("BMP", in.width, in.height);
  r.seek(offset, "pixel data offset");
  return in;
}

// Pillow's RLE8/RLE4 expansion: pixel indices row after row in file order, len == width * height
// unless the stream ends early.
std::vector<uint8_t> expand_rle(Reader& r, int width, int height, bool rle4) {
  const size_t w = size_t(width), total = w * size_t(height);
  std::vector<uint8_t> out;
  out.reserve(total);
  size_t x = 0;
  while (out.size() < total && r.left() >= 2) {
    const uint8_t count = r.u8("RLE data"), value = r.u8("RLE data");
    if (count) {  // a run of `count` pixels, clipped at the row's end
      const size_t n = x + count > w ? (x < w ? w - x : 0) : count;
      for (size_t i = 0; i < n; ++i) out.push_back(rle4 ? (i % 2 ? value & 15 : value >> 4) : value);
      x += n;
    } else if (value == 0) {  // end of row
      while (out.size() % w) out.push_back(0);
      x = 0;
    } else if (value == 1) {  // end of bitmap
      break;
    } else if (value == 2) {  // delta: skip right, up rows
      if (r.left() < 2) break;
      const size_t right = r.u8("RLE delta"), up = r.u8("RLE delta");
      const size_t n = std::min(total - out.size(), right + up * w);
      out.insert(out.end(), n, 0);
      x = out.size() % w;
    } else {  // `value` literal pixels, padded to an even byte count
      const size_t n = std::min<size_t>(total - out.size(), value);
      const size_t nbytes = rle4 ? (n + 1) / 2 : n;
      const size_t got = std::min(nbytes, r.left());
      const uint8_t* p = r.take(got, "RLE data");
      if (rle4) {
        for (size_t i = 0; i < got; ++i) {
          out.push_back(p[i] >> 4);
          if (i * 2 + 1 < n) out.push_back(p[i] & 15);
        }
      } else {
        out.insert(out.end(), p, p + got);
      }
      if (got < nbytes || out.size() == total) break;
      x += value;
      if (r.pos() % 2 && r.left() > 0) r.skip(1, "RLE padding");
    }
  }
  if (out.size() < total) fail("BMP", "RLE data ends before the image is complete");
  return out;
}

}  // namespace

Pixels decode_bmp(const uint8_t* data, size_t size) {
  Reader r(data, size, "BMP");
  Info in = parse_headers(r);
  const size_t pixel_at = r.pos();
  const int w = int(in.width), h = int(in.height);

  Layout32 layout{0xFF0000, 0xFF00, 0xFF, 0, false};
  bool five_six_five = false;
  if (in.compression == kBitfields) {
    const uint32_t* m = in.masks;
    bool ok = false;
    if (in.bits == 32) {
      for (const auto& l : kLayouts32) {
        if (m[0] == l.r && m[1] == l.g && m[2] == l.b && m[3] == l.a) layout = l, ok = true;
      }
      if (!m[0] && !m[1] && !m[2] && !m[3]) layout = {0xFF0000, 0xFF00, 0xFF, 0xFF000000, true}, ok = true;
    } else if (in.bits == 24) {
      ok = m[0] == 0xFF0000 && m[1] == 0xFF00 && m[2] == 0xFF;
    } else if (in.bits == 16) {
      five_six_five = m[0] == 0xF800 && m[1] == 0x7E0 && m[2] == 0x1F;
      ok = five_six_five || (m[0] == 0x7C00 && m[1] == 0x3E0 && m[2] == 0x1F);
    }
    if (!ok) fail("BMP", "unsupported BI_BITFIELDS layout for " + std::to_string(in.bits) + "-bit pixels");
  } else if (in.compression == kRle8 || in.compression == kRle4) {
    const int need = in.compression == kRle8 ? 8 : 4;
    if (in.bits != need) fail("BMP", (need == 8 ? "RLE8" : "RLE4") + std::string(" with ") + std::to_string(in.bits) + "-bit pixels");
  } else if (in.compression != kRaw) {
    const char* names[] = {"", "", "", "", "JPEG", "PNG", "BI_ALPHABITFIELDS"};
    const std::string name = in.compression < 7 ? names[in.compression] : "";
    fail("BMP", "unsupported compression " + std::to_string(in.compression) + (name.empty() ? "" : " (" + name + ")"));
  }

  // The palette: Pillow drops a gray-ramp palette and reads the data as gray ("L") or 1-bit ("1").
  uint8_t palette[256 * 3] = {0};
  PaletteKind kind = PaletteKind::kColor;
  if (in.bits <= 8) {
    if (in.colors == 0 || in.colors > 65536) fail("BMP", "unsupported palette size " + std::to_string(in.colors));
    const size_t e = in.palette_entry;
    Reader pr(data, size, "BMP");
    pr.seek(in.palette_at, "palette");
    const uint8_t* pal = pr.take(e * size_t(in.colors), "palette");
    bool gray = true;
    for (uint64_t i = 0; i < in.colors; ++i) {
      const uint8_t v = in.colors == 2 ? (i ? 255 : 0) : uint8_t(i & 255);
      const uint8_t* p = pal + i * e;
      gray = gray && p[0] == v && p[1] == v && p[2] == v;
    }
    for (uint64_t i = 0; i < in.colors && i < 256; ++i) {
      for (int c = 0; c < 3; ++c) palette[i * 3 + c] = pal[i * e + 2 - c];  // stored B, G, R
    }
    if (gray) kind = in.colors <= 2 ? PaletteKind::kGray1 : PaletteKind::kGrayL;
    if (kind == PaletteKind::kGrayL && in.bits < 8 && in.compression == kRaw) {
      fail("BMP", "a " + std::to_string(in.bits) + "-bit image with a gray-ramp palette of " +
                      std::to_string(in.colors) + " colors is not supported");
    }
  }
  const auto index_color = [&](uint8_t* dst, unsigned i) {
    if (kind == PaletteKind::kColor) {
      std::memcpy(dst, palette + i * 3, 3);
    } else {
      dst[0] = dst[1] = dst[2] = kind == PaletteKind::kGrayL ? uint8_t(i) : (i ? 255 : 0);
    }
  };

  const size_t stride = ((size_t(w) * size_t(in.bits) + 31) >> 3) & ~size_t(3);
  if (in.compression == kRaw || in.compression == kBitfields) {  // all rows present, before allocating
    if ((size - pixel_at) / stride < size_t(h)) r.truncated("pixel data");
  }
  const int channels = layout.alpha && in.bits == 32 ? 4 : 3;
  Pixels out = new_pixels("BMP", w, h, channels);
  const auto out_row = [&](int file_row) {  // image row of the file_row-th row stored
    const int y = in.top_down ? file_row : h - 1 - file_row;
    return out.data.data() + size_t(y) * size_t(w) * size_t(channels);
  };

  if (in.compression == kRle8 || in.compression == kRle4) {
    const std::vector<uint8_t> idx = expand_rle(r, w, h, in.compression == kRle4);
    for (int row = 0; row < h; ++row) {
      uint8_t* dst = out_row(row);
      for (int x = 0; x < w; ++x) index_color(dst + 3 * x, idx[size_t(row) * size_t(w) + size_t(x)]);
    }
    return out;
  }

  const int unpack_bits = kind == PaletteKind::kGray1 ? 1 : in.bits;  // Pillow reads mode "1" data as 1-bit
  const int sr = shift_of(layout.r), sg = shift_of(layout.g), sb = shift_of(layout.b), sa = shift_of(layout.a);
  for (int row = 0; row < h; ++row) {
    Reader rr(data, size, "BMP");
    rr.seek(pixel_at + size_t(row) * stride, "pixel data");
    const uint8_t* src = rr.take(stride, "pixel data");
    uint8_t* dst = out_row(row);
    for (int x = 0; x < w; ++x, dst += channels) {
      if (in.bits <= 8) {
        const int bit = x * unpack_bits;
        const unsigned i = (src[bit >> 3] >> (8 - unpack_bits - (bit & 7))) & ((1u << unpack_bits) - 1);
        index_color(dst, i);
      } else if (in.bits == 16) {
        const unsigned v = src[2 * x] | src[2 * x + 1] << 8;
        if (five_six_five) {
          dst[0] = uint8_t((v >> 11) * 255 / 31), dst[1] = uint8_t(((v >> 5) & 63) * 255 / 63), dst[2] = uint8_t((v & 31) * 255 / 31);
        } else {
          dst[0] = uint8_t(((v >> 10) & 31) * 255 / 31), dst[1] = uint8_t(((v >> 5) & 31) * 255 / 31), dst[2] = uint8_t((v & 31) * 255 / 31);
        }
      } else if (in.bits == 24) {
        dst[0] = src[3 * x + 2], dst[1] = src[3 * x + 1], dst[2] = src[3 * x];
      } else {
        const uint32_t v = uint32_t(src[4 * x]) | uint32_t(src[4 * x + 1]) << 8 | uint32_t(src[4 * x + 2]) << 16 | uint32_t(src[4 * x + 3]) << 24;
        dst[0] = uint8_t(v >> sr), dst[1] = uint8_t(v >> sg), dst[2] = uint8_t(v >> sb);
        if (channels == 4) dst[3] = uint8_t(v >> sa);
      }
    }
  }
  return out;
}

}  // namespace edgevlm::codec
