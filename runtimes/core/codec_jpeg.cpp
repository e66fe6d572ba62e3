// JPEG decoding (ITU T.81): the marker segments (SOF0/1/2, DHT, DQT, DRI, SOS, APP0 JFIF, APP14
// Adobe), the frame's components and sampling factors, and the scan loop. Baseline, extended
// (8-bit) and progressive Huffman-coded files with 1 (gray), 3 (YCbCr or RGB) or 4 (CMYK or YCCK)
// components; lossless, hierarchical, arithmetic-coded and 12-bit files are refused by name.
//
// The color space is chosen as libjpeg does: 3 components are YCbCr with a JFIF marker, RGB with
// an Adobe marker of transform 0, else by the component ids ('R','G','B' -> RGB); 4 components are
// YCCK with an Adobe marker of transform other than 0, else CMYK. In sequential files, missing
// Huffman tables 0 and 1 default to those of T.81 Annex K.3, as in libjpeg-turbo.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/codec_jpeg.h"

namespace edgevlm::codec {
namespace {

using jpeg::ColorSpace;
using jpeg::Component;
using jpeg::Frame;
using jpeg::Scan;
using jpeg::Tables;

// T.81 Table K.3-K.6: codes per length 1..16, then the symbols.
constexpr uint8_t kDcLumaCounts[16] = {0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
constexpr uint8_t kDcChromaCounts[16] = {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
constexpr uint8_t kDcSymbols[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
constexpr uint8_t kAcLumaCounts[16] = {0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d};
constexpr uint8_t kAcLumaSymbols[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
    0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
    0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
    0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65,
    0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
    0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
    0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
    0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};
constexpr uint8_t kAcChromaCounts[16] = {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77};
constexpr uint8_t kAcChromaSymbols[162] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
    0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16,
    0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39,
    0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
    0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9,
    0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};

[[noreturn]] void bad(const std::string& problem) { fail("JPEG", problem); }

std::string hex_marker(uint8_t m) {
  static const char* kDigits = "0123456789ABCDEF";
  return std::string("FF") + kDigits[m >> 4] + kDigits[m & 15];
}

struct State {
  Frame frame;
  Tables tables;
  bool have_frame = false, jfif = false, adobe = false, color_chosen = false;
  int adobe_transform = 0;
  int scans = 0;
};

void parse_sof(State& st, uint8_t marker, const uint8_t* s, size_t n, size_t file_size) {
  if (st.have_frame) bad("more than one frame header");
  if (n < 6) bad("frame header truncated");
  Frame& f = st.frame;
  const int precision = s[0];
  f.height = s[1] << 8 | s[2];
  f.width = s[3] << 8 | s[4];
  f.ncomp = s[5];
  f.progressive = marker == 0xC2;
  if (precision != 8) bad(std::to_string(precision) + "-bit samples are not supported (only 8-bit JPEG)");
  if (f.ncomp != 1 && f.ncomp != 3 && f.ncomp != 4) {
    bad(std::to_string(f.ncomp) + " color components are not supported (only 1, 3 or 4)");
  }
  if (n < 6 + 3 * size_t(f.ncomp)) bad("frame header truncated");
  if (f.height == 0) bad("the height is given by a DNL marker, which is not supported");
  check_size("JPEG", f.width, f.height);
  for (int i = 0; i < f.ncomp; ++i) {
    Component& c = f.comp[i];
    c.id = s[6 + 3 * i];
    c.h = s[7 + 3 * i] >> 4;
    c.v = s[7 + 3 * i] & 15;
    c.tq = s[8 + 3 * i];
    if (c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4) {
      bad("invalid sampling factors " + std::to_string(c.h) + "x" + std::to_string(c.v));
    }
    if (c.tq > 3) bad("invalid quantization table number " + std::to_string(c.tq));
    for (int j = 0; j < i; ++j) {
      if (f.comp[j].id == c.id) bad("two components with id " + std::to_string(c.id));
    }
    f.hmax = std::max(f.hmax, c.h);
    f.vmax = std::max(f.vmax, c.v);
  }
  // Every block takes at least one bit in its first scan: a file this short cannot describe this
  // many blocks (checked before the planes are allocated).
  int64_t blocks_needed = 0;
  for (int i = 0; i < f.ncomp; ++i) {
    const Component& c = f.comp[i];
    blocks_needed += ((int64_t(f.width) * c.h + 8 * f.hmax - 1) / (8 * f.hmax)) *
                     ((int64_t(f.height) * c.v + 8 * f.vmax - 1) / (8 * f.vmax));
  }
  if (blocks_needed > 8 * int64_t(file_size)) {
    bad("file too short for a " + std::to_string(f.width) + "x" + std::to_string(f.height) + " image (truncated)");
  }
  f.mcus_x = (f.width + 8 * f.hmax - 1) / (8 * f.hmax);
  f.mcus_y = (f.height + 8 * f.vmax - 1) / (8 * f.vmax);
  for (int i = 0; i < f.ncomp; ++i) {
    Component& c = f.comp[i];
    if (f.hmax % c.h || f.vmax % c.v) bad("fractional sampling factors (not an integer ratio) are not supported");
    c.width = int((int64_t(f.width) * c.h + f.hmax - 1) / f.hmax);
    c.height = int((int64_t(f.height) * c.v + f.vmax - 1) / f.vmax);
    c.blocks_w = f.mcus_x * c.h;
    c.blocks_h = f.mcus_y * c.v;
    const size_t blocks = size_t(c.blocks_w) * size_t(c.blocks_h);
    // Blocks no scan reaches stay mid-gray, as zero coefficients would give.
    c.plane.assign(blocks * 64, 128);
    if (f.progressive) c.coefs.assign(blocks * 64, 0);
  }
  st.have_frame = true;
}

void parse_dqt(State& st, const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const int pq = s[i] >> 4, tq = s[i] & 15;
    if (pq > 1 || tq > 3) bad("invalid quantization table header");
    const size_t bytes = pq ? 128 : 64;
    if (n - i - 1 < bytes) bad("quantization table truncated");
    const uint8_t* v = s + i + 1;
    for (int k = 0; k < 64; ++k) st.tables.quant[tq][jpeg::kNatural[k]] = uint16_t(pq ? (v[2 * k] << 8 | v[2 * k + 1]) : v[k]);
    st.tables.quant_defined[tq] = true;
    i += 1 + bytes;
  }
}

void parse_dht(State& st, const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (n - i < 17) bad("Huffman table truncated");
    const int tc = s[i] >> 4, th = s[i] & 15;
    if (tc > 1 || th > 3) bad("invalid Huffman table header");
    const uint8_t* counts = s + i + 1;
    int total = 0;
    for (int l = 0; l < 16; ++l) total += counts[l];
    if (total > 256 || n - i - 17 < size_t(total)) bad("Huffman table truncated or too large");
    jpeg::HuffmanTable& t = tc ? st.tables.ac[th] : st.tables.dc[th];
    if (!t.build(counts, s + i + 17, total)) bad("invalid Huffman table");
    t.standard = false;
    i += 17 + size_t(total);
  }
}

// libjpeg's choice of color space, from the markers seen before the first scan.
ColorSpace color_space(const State& st) {
  const Frame& f = st.frame;
  if (f.ncomp == 1) return ColorSpace::kGray;
  if (f.ncomp == 4) return st.adobe && st.adobe_transform != 0 ? ColorSpace::kYcck : ColorSpace::kCmyk;
  if (st.jfif) return ColorSpace::kYCbCr;
  if (st.adobe) return st.adobe_transform == 0 ? ColorSpace::kRgb : ColorSpace::kYCbCr;
  if (f.comp[0].id == 'R' && f.comp[1].id == 'G' && f.comp[2].id == 'B') return ColorSpace::kRgb;
  return ColorSpace::kYCbCr;
}

Scan parse_sos(State& st, const uint8_t* s, size_t n) {
  if (!st.have_frame) bad("scan before the frame header");
  Frame& f = st.frame;
  if (!st.color_chosen) f.color = color_space(st), st.color_chosen = true;
  Scan sc;
  if (n < 1) bad("scan header truncated");
  sc.ncomp = s[0];
  if (sc.ncomp < 1 || sc.ncomp > f.ncomp || n < 4 + 2 * size_t(sc.ncomp)) bad("invalid scan header");
  int blocks_per_mcu = 0;
  for (int i = 0; i < sc.ncomp; ++i) {
    const int id = s[1 + 2 * i], tables = s[2 + 2 * i];
    int k = 0;
    while (k < f.ncomp && f.comp[k].id != id) ++k;
    if (k == f.ncomp) bad("scan names component " + std::to_string(id) + ", which the frame does not have");
    for (int j = 0; j < i; ++j) {
      if (sc.comp[j] == k) bad("scan names component " + std::to_string(id) + " twice");
    }
    sc.comp[i] = k;
    Component& c = f.comp[k];
    c.dc_table = tables >> 4;
    c.ac_table = tables & 15;
    if (c.dc_table > 3 || c.ac_table > 3) bad("invalid Huffman table number in scan header");
    blocks_per_mcu += c.h * c.v;
  }
  const uint8_t* p = s + 1 + 2 * sc.ncomp;
  sc.ss = p[0], sc.se = p[1], sc.ah = p[2] >> 4, sc.al = p[2] & 15;
  if (sc.ncomp > 1 && blocks_per_mcu > 10) bad("sampling factors too large for an interleaved scan");
  if (f.progressive) {
    const bool ok = (sc.ss == 0 ? sc.se == 0 : (sc.se >= sc.ss && sc.se <= 63 && sc.ncomp == 1)) &&
                    (sc.ah == 0 || sc.al == sc.ah - 1) && sc.al <= 13;
    if (!ok) {
      bad("invalid progressive scan (Ss=" + std::to_string(sc.ss) + " Se=" + std::to_string(sc.se) + " Ah=" +
          std::to_string(sc.ah) + " Al=" + std::to_string(sc.al) + ")");
    }
  } else {
    sc.ss = 0, sc.se = 63, sc.ah = 0, sc.al = 0;
  }
  for (int i = 0; i < sc.ncomp; ++i) {
    Component& c = f.comp[sc.comp[i]];
    const bool need_dc = sc.ss == 0 && sc.ah == 0, need_ac = !f.progressive || sc.ss > 0;
    const auto usable = [&](const jpeg::HuffmanTable& t) { return t.defined && !(f.progressive && t.standard); };
    if (need_dc && !usable(st.tables.dc[c.dc_table])) bad("DC Huffman table " + std::to_string(c.dc_table) + " not defined");
    if (need_ac && !usable(st.tables.ac[c.ac_table])) bad("AC Huffman table " + std::to_string(c.ac_table) + " not defined");
    if (!c.quant_latched) {  // libjpeg keeps the table as it was at the component's first scan
      if (!st.tables.quant_defined[c.tq]) bad("quantization table " + std::to_string(c.tq) + " not defined");
      std::memcpy(c.quant, st.tables.quant[c.tq], sizeof c.quant);
      c.quant_latched = true;
    }
  }
  return sc;
}

}  // namespace

Pixels decode_jpeg(const uint8_t* data, size_t size) {
  State st;
  st.tables.dc[0].build(kDcLumaCounts, kDcSymbols, 12);
  st.tables.dc[1].build(kDcChromaCounts, kDcSymbols, 12);
  st.tables.ac[0].build(kAcLumaCounts, kAcLumaSymbols, 162);
  st.tables.ac[1].build(kAcChromaCounts, kAcChromaSymbols, 162);
  st.tables.dc[0].standard = st.tables.dc[1].standard = st.tables.ac[0].standard = st.tables.ac[1].standard = true;
  size_t pos = 2;  // after SOI (checked by the caller)
  for (;;) {
    while (pos < size && data[pos] != 0xFF) ++pos;  // stray bytes before a marker: skipped, as libjpeg does
    while (pos < size && data[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= size) bad("file truncated (no end-of-image marker)");
    const uint8_t m = data[pos++];
    if (m == 0xD9) break;
    if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;  // RSTn outside a scan, TEM: no segment
    if (m == 0xD8) bad("a second start-of-image marker");
    if (size - pos < 2) bad("file truncated (marker " + hex_marker(m) + ")");
    const size_t len = size_t(data[pos]) << 8 | data[pos + 1];
    if (len < 2) bad("marker " + hex_marker(m) + " with a bad length");
    if (size - pos < len) bad("file truncated (marker " + hex_marker(m) + ")");
    const uint8_t* seg = data + pos + 2;
    const size_t n = len - 2;
    size_t next = pos + len;
    switch (m) {
      case 0xC0: case 0xC1: case 0xC2: parse_sof(st, m, seg, n, size); break;
      case 0xC3: bad("lossless JPEG (SOF3) is not supported");
      case 0xC5: case 0xC6: case 0xC7: bad("hierarchical (differential) JPEG is not supported");
      case 0xC9: case 0xCA: case 0xCB: case 0xCD: case 0xCE: case 0xCF:
        bad("arithmetic-coded JPEG is not supported");
      case 0xC4: parse_dht(st, seg, n); break;
      case 0xDB: parse_dqt(st, seg, n); break;
      case 0xDD:
        if (n < 2) bad("restart interval segment truncated");
        st.tables.restart_interval = seg[0] << 8 | seg[1];
        break;
      case 0xDA: {
        const Scan sc = parse_sos(st, seg, n);
        next = jpeg::decode_scan(data, size, pos + len, st.frame, st.tables, sc);
        ++st.scans;
        break;
      }
      case 0xE0:
        if (n >= 14 && std::memcmp(seg, "JFIF\0", 5) == 0) st.jfif = true;
        break;
      case 0xEE:
        if (n >= 12 && std::memcmp(seg, "Adobe", 5) == 0) st.adobe = true, st.adobe_transform = seg[11];
        break;
      default: break;  // other APPn, COM, DAC, DNL, ...: skipped
    }
    pos = next;
  }
  if (!st.have_frame) bad("no frame header (SOF)");
  if (st.scans == 0) bad("no image data (no scan)");
  Frame& f = st.frame;
  if (f.progressive) {
    for (int i = 0; i < f.ncomp; ++i) {
      Component& c = f.comp[i];
      const size_t stride = size_t(c.blocks_w) * 8;
      for (int by = 0; by < c.blocks_h; ++by) {
        for (int bx = 0; bx < c.blocks_w; ++bx) {
          const int16_t* coef = c.coefs.data() + (size_t(by) * size_t(c.blocks_w) + size_t(bx)) * 64;
          jpeg::idct_islow(coef, c.quant, c.plane.data() + size_t(by) * 8 * stride + size_t(bx) * 8, stride);
        }
      }
      c.coefs = std::vector<int16_t>();
    }
  }
  Pixels out = new_pixels("JPEG", f.width, f.height, 3);
  jpeg::planes_to_rgb(f, out.data.data());
  return out;
}

}  // namespace edgevlm::codec
