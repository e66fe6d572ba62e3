// GIF (87a/89a) decoding of the first frame: LZW, global and local color tables, interlaced rows,
// the graphic control extension's transparent index.
//
// As Pillow gives the first frame: the canvas is the logical screen, grown to hold the frame; the
// area outside the frame is color index 0, or transparent when the frame has a transparent index;
// an index past the color table is black; a color table that is the gray ramp 0, 1, 2, ... (or no
// table at all) makes the index itself the gray value. A frame with fewer pixels than its size fails.
#include <algorithm>
#include <cstring>

#include "core/codec.h"

namespace edgevlm::codec {
namespace {

struct Frame {
  int x = 0, y = 0, w = 0, h = 0;
  bool interlaced = false;
  int transparent = -1;
  const uint8_t* table = nullptr;  // the color table that applies (local, else global), or null
  int table_entries = 0;
  int min_code_size = 0;
  std::vector<uint8_t> lzw;  // the image data sub-blocks, concatenated
};

// The data sub-blocks at r (size byte, bytes; a zero size ends them), appended to `out` if given.
void read_sub_blocks(Reader& r, std::vector<uint8_t>* out) {
  for (;;) {
    const uint8_t n = r.u8("data sub-block");
    if (n == 0) return;
    const uint8_t* p = r.take(n, "data sub-block");
    if (out) out->insert(out->end(), p, p + n);
  }
}

bool is_gray_ramp(const uint8_t* table, int entries) {
  for (int i = 0; i < entries; ++i) {
    if (table[3 * i] != i || table[3 * i + 1] != i || table[3 * i + 2] != i) return false;
  }
  return true;
}

// LZW (variable code size, LSB-first codes, clear and end codes) into exactly out.size() indices;
// extra pixels are dropped, too few fail.
void lzw_decode(const std::vector<uint8_t>& in, int min_code_size, std::vector<uint8_t>& out) {
  constexpr int kMaxCodes = 4096;
  if (min_code_size < 1 || min_code_size > 8) fail("GIF", "invalid LZW minimum code size " + std::to_string(min_code_size));
  const int clear = 1 << min_code_size, end = clear + 1;
  // Table entry = the string of entry `prefix` followed by `suffix`; `first` is its first index.
  std::vector<uint16_t> prefix(kMaxCodes), length(kMaxCodes);
  std::vector<uint8_t> suffix(kMaxCodes), first(kMaxCodes);
  for (int i = 0; i < clear; ++i) suffix[i] = first[i] = uint8_t(i), length[i] = 1;
  int size = min_code_size + 1, next = end + 1, prev = -1;
  size_t bitpos = 0, o = 0;
  const size_t nbits = in.size() * 8, total = out.size();
  while (o < total && bitpos + size_t(size) <= nbits) {
    int code = 0;
    for (int b = 0; b < size; ++b, ++bitpos) code |= ((in[bitpos >> 3] >> (bitpos & 7)) & 1) << b;
    if (code == clear) {
      size = min_code_size + 1, next = end + 1, prev = -1;
      continue;
    }
    if (code == end) break;
    if (prev < 0 ? code >= clear : code > next) fail("GIF", "corrupt LZW data (code " + std::to_string(code) + ")");
    if (prev >= 0 && next < kMaxCodes) {  // the decoder's entry lags one code behind the encoder's
      prefix[next] = uint16_t(prev);
      suffix[next] = first[code == next ? prev : code];
      first[next] = first[prev];
      length[next] = uint16_t(length[prev] + 1);
      ++next;
      if (next == (1 << size) && size < 12) ++size;
    }
    const size_t len = length[code];  // its string, written back to front, clipped to the frame
    for (size_t pos = o + len, c = size_t(code); pos > o; c = prefix[c]) {
      if (--pos < total) out[pos] = suffix[c];
    }
    o = o + len < total ? o + len : total;
    prev = code;
  }
  if (o < total) {
    fail("GIF", "image data ends before the frame is complete (" + std::to_string(o) + " of " + std::to_string(total) + " pixels)");
  }
}

}  // namespace

Pixels decode_gif(const uint8_t* data, size_t size) {
  Reader r(data, size, "GIF");
  r.skip(6, "header");
  int width = int(r.le16("logical screen")), height = int(r.le16("logical screen"));
  const uint8_t flags = r.u8("logical screen");
  r.skip(2, "logical screen");
  const uint8_t* global = nullptr;
  int global_entries = 0;
  if (flags & 0x80) {
    global_entries = 2 << (flags & 7);
    global = r.take(size_t(3 * global_entries), "global color table");
  }
  Frame f;
  bool found = false;
  while (!found && r.left() > 0) {
    const uint8_t b = r.u8("block");
    if (b == ';') break;
    if (b == '!') {
      const uint8_t label = r.u8("extension");
      const uint8_t n = r.u8("extension");
      if (n == 0) continue;
      const uint8_t* block = r.take(n, "extension");
      if (label == 0xF9 && n >= 4 && (block[0] & 1)) f.transparent = block[3];
      read_sub_blocks(r, nullptr);
    } else if (b == ',') {
      f.x = int(r.le16("image descriptor")), f.y = int(r.le16("image descriptor"));
      f.w = int(r.le16("image descriptor")), f.h = int(r.le16("image descriptor"));
      const uint8_t lf = r.u8("image descriptor");
      f.interlaced = (lf & 0x40) != 0;
      f.table = global, f.table_entries = global_entries;
      if (lf & 0x80) {
        f.table_entries = 2 << (lf & 7);
        f.table = r.take(size_t(3 * f.table_entries), "local color table");
      }
      f.min_code_size = r.u8("LZW minimum code size");
      read_sub_blocks(r, &f.lzw);
      found = true;
    }  // anything else: skipped a byte at a time, as Pillow does
  }
  if (!found) fail("GIF", "no image in the file");
  width = std::max(width, f.x + f.w);
  height = std::max(height, f.y + f.h);
  check_size("GIF", width, height);
  if (f.table && is_gray_ramp(f.table, f.table_entries)) f.table = nullptr;

  // A code of >= 2 bits gives at most 4096 indices: refuse a frame its data cannot fill, unallocated.
  if ((int64_t(f.w) * f.h - 4096) / 16384 > int64_t(f.lzw.size())) {
    fail("GIF", "image data too short for a " + std::to_string(f.w) + "x" + std::to_string(f.h) + " frame (truncated)");
  }
  std::vector<uint8_t> indices(size_t(f.w) * size_t(f.h));
  if (!indices.empty()) lzw_decode(f.lzw, f.min_code_size, indices);

  // Canvas of indices, background index 0 (or the transparent index), then colors.
  std::vector<uint8_t> canvas(size_t(width) * size_t(height), uint8_t(f.transparent >= 0 ? f.transparent : 0));
  std::vector<int> rows;  // the frame row of each stored row
  if (f.interlaced) {
    static constexpr int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
    for (int pass = 0; pass < 4; ++pass) {
      for (int y = kStart[pass]; y < f.h; y += kStep[pass]) rows.push_back(y);
    }
  } else {
    for (int y = 0; y < f.h; ++y) rows.push_back(y);
  }
  for (int i = 0; i < f.h; ++i) {
    std::memcpy(canvas.data() + size_t(f.y + rows[size_t(i)]) * size_t(width) + size_t(f.x),
                indices.data() + size_t(i) * size_t(f.w), size_t(f.w));
  }
  const int channels = f.transparent >= 0 ? 4 : 3;
  Pixels out = new_pixels("GIF", width, height, channels);
  uint8_t* dst = out.data.data();
  for (size_t i = 0; i < canvas.size(); ++i, dst += channels) {
    const int v = canvas[i];
    if (!f.table) {
      dst[0] = dst[1] = dst[2] = uint8_t(v);
    } else if (v < f.table_entries) {
      std::memcpy(dst, f.table + 3 * v, 3);
    }  // else black (already zero)
    if (channels == 4) dst[3] = v == f.transparent ? 0 : 255;
  }
  return out;
}

}  // namespace edgevlm::codec
