// JPEG entropy-coded data (ITU T.81 Annex F and G, Huffman coding only): the bit reader with byte
// stuffing and restart markers, Huffman decoding, sequential blocks, and the four progressive
// scan kinds (DC first / refine, AC first / refine with end-of-band runs). See codec_jpeg.h.
#include <cstring>

#include "core/codec_jpeg.h"

namespace edgevlm::codec::jpeg {

const uint8_t kNatural[64 + 16] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13,
    6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
    39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

bool HuffmanTable::build(const uint8_t counts[16], const uint8_t* symbols, int n) {
  int total = 0;
  for (int l = 0; l < 16; ++l) total += counts[l];
  if (total != n || total > 256) return false;
  int32_t code = 0;
  for (int l = 1; l <= 16; ++l) {  // canonical codes: each length's codes follow the last, shifted
    code += counts[l - 1];
    if (code >= (1 << l)) return false;  // over-subscribed, or uses the all-ones code
    code <<= 1;
  }
  std::memcpy(values, symbols, size_t(n));
  std::memset(fast_len, 0, sizeof fast_len);
  code = 0;
  int k = 0;
  for (int l = 1; l <= 16; ++l) {
    valoffset[l] = k - code;
    for (int i = 0; i < counts[l - 1]; ++i, ++code, ++k) {
      if (l <= kFast) {
        const int first = code << (kFast - l), last = (code + 1) << (kFast - l);
        for (int e = first; e < last; ++e) fast_len[e] = uint8_t(l), fast_sym[e] = symbols[k];
      }
    }
    maxcode[l] = counts[l - 1] ? code - 1 : -1;
    code <<= 1;
  }
  maxcode[0] = maxcode[17] = -1;
  defined = true;
  return true;
}

namespace {

[[noreturn]] void corrupt(const char* what) { fail("JPEG", std::string("corrupt or truncated data (") + what + ")"); }

// MSB-first bits of the entropy-coded segment; stuffed FF 00 -> FF. At a marker or the end of the
// data it shifts in zero bytes and counts them, so reading past the segment is detected.
class BitReader {
 public:
  BitReader(const uint8_t* d, size_t n, size_t pos) : d_(d), n_(n), pos_(pos) {}

  void fill() {
    while (count_ <= 56) {
      uint64_t b = 0;
      if (!at_marker_ && pos_ < n_) {
        b = d_[pos_];
        if (b != 0xFF) {
          ++pos_;
        } else if (pos_ + 1 < n_ && d_[pos_ + 1] == 0) {
          pos_ += 2;
        } else {
          at_marker_ = true;  // pos_ stays on the marker's FF
          b = 0;
          ++padding_;
        }
      } else {
        ++padding_;
      }
      bits_ |= b << (56 - count_);
      count_ += 8;
    }
  }
  int get(int n) {  // n <= 16
    if (n == 0) return 0;
    if (count_ < n) fill();
    const int v = int(bits_ >> (64 - n));
    bits_ <<= n;
    count_ -= n;
    return v;
  }
  int decode(const HuffmanTable& t) {
    if (count_ < 16) fill();
    const uint32_t look = uint32_t(bits_ >> (64 - HuffmanTable::kFast));
    if (const int l = t.fast_len[look]) {
      bits_ <<= l;
      count_ -= l;
      return t.fast_sym[look];
    }
    for (int l = HuffmanTable::kFast + 1; l <= 16; ++l) {
      const int32_t code = int32_t(bits_ >> (64 - l));
      if (code <= t.maxcode[l]) {
        bits_ <<= l;
        count_ -= l;
        return t.values[code + t.valoffset[l]];
      }
    }
    corrupt("bad Huffman code");
  }
  // Bits of the zero padding consumed: the segment ended before the data it should hold.
  bool overrun() const { return padding_ * 8 > size_t(count_); }

  // The position of the next marker's FF (or the end of the data), past anything left over.
  size_t next_marker() {
    size_t p = pos_;
    while (p < n_ && !(d_[p] == 0xFF && p + 1 < n_ && d_[p + 1] != 0)) ++p;
    return p;
  }
  // At a restart interval's end: the marker RSTn must follow; the reader then starts afresh.
  void restart(int n) {
    size_t p = next_marker();
    while (p + 1 < n_ && d_[p + 1] == 0xFF) ++p;  // fill bytes before the marker
    if (p + 1 >= n_ || d_[p + 1] != 0xD0 + n) corrupt("restart marker missing");
    pos_ = p + 2;
    bits_ = 0;
    count_ = 0;
    padding_ = 0;
    at_marker_ = false;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_;
  uint64_t bits_ = 0;  // left-aligned
  int count_ = 0;
  size_t padding_ = 0;
  bool at_marker_ = false;
};

// The value of a magnitude category s from its s extra bits (T.81 F.2.2.1, EXTEND).
inline int extend(int v, int s) { return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v; }

struct Decoder {
  BitReader& br;
  Frame& frame;
  const Tables& tables;
  const Scan& scan;
  int eobrun = 0;

  const HuffmanTable& dc(const Component& c) const { return tables.dc[c.dc_table]; }
  const HuffmanTable& ac(const Component& c) const { return tables.ac[c.ac_table]; }

  int dc_diff(const Component& c) {
    const int s = br.decode(dc(c));
    if (s > 15) corrupt("DC magnitude category over 15");
    return s ? extend(br.get(s), s) : 0;
  }

  void sequential(Component& c, int bx, int by) {
    int16_t coef[64] = {0};
    c.dc_pred += dc_diff(c);
    coef[0] = int16_t(c.dc_pred);
    const HuffmanTable& t = ac(c);
    for (int k = 1; k < 64;) {
      const int rs = br.decode(t), r = rs >> 4, s = rs & 15;
      if (s) {
        k += r;
        coef[kNatural[k]] = int16_t(extend(br.get(s), s));
        ++k;
      } else if (r == 15) {
        k += 16;
      } else {
        break;
      }
    }
    const size_t stride = size_t(c.blocks_w) * 8;
    idct_islow(coef, c.quant, c.plane.data() + size_t(by) * 8 * stride + size_t(bx) * 8, stride);
  }

  int16_t* block(Component& c, int bx, int by) {
    return c.coefs.data() + (size_t(by) * size_t(c.blocks_w) + size_t(bx)) * 64;
  }

  void dc_first(Component& c, int16_t* b) {
    c.dc_pred += dc_diff(c);
    b[0] = int16_t(c.dc_pred * (1 << scan.al));
  }
  void dc_refine(int16_t* b) {
    if (br.get(1)) b[0] = int16_t(b[0] | (1 << scan.al));
  }
  void ac_first(Component& c, int16_t* b) {
    if (eobrun > 0) {
      --eobrun;
      return;
    }
    const HuffmanTable& t = ac(c);
    for (int k = scan.ss; k <= scan.se;) {
      const int rs = br.decode(t), r = rs >> 4, s = rs & 15;
      if (s) {
        k += r;
        b[kNatural[k]] = int16_t(extend(br.get(s), s) * (1 << scan.al));
        ++k;
      } else if (r == 15) {
        k += 16;
      } else {
        eobrun = (1 << r) - 1 + br.get(r);  // this block ends the band, and eobrun more after it
        break;
      }
    }
  }
  // One correction bit for an already nonzero coefficient: adds 1 << al away from zero if set.
  void refine_nonzero(int16_t& v) {
    const int p1 = 1 << scan.al;
    if (br.get(1) && (v & p1) == 0) v = int16_t(v >= 0 ? v + p1 : v - p1);
  }
  void ac_refine(Component& c, int16_t* b) {
    const int p1 = 1 << scan.al;
    int k = scan.ss;
    if (eobrun == 0) {
      const HuffmanTable& t = ac(c);
      for (; k <= scan.se; ++k) {
        const int rs = br.decode(t);
        int r = rs >> 4, s = rs & 15, value = 0;
        if (s) {
          if (s != 1) corrupt("refinement magnitude other than 1");
          value = br.get(1) ? p1 : -p1;
        } else if (r != 15) {
          eobrun = (1 << r) + br.get(r);  // including this block
          break;
        }
        // Skip r zero coefficients (refining the nonzero ones on the way), stop on the next zero.
        for (; k <= scan.se; ++k) {
          int16_t& v = b[kNatural[k]];
          if (v != 0) {
            refine_nonzero(v);
          } else if (--r < 0) {
            break;
          }
        }
        if (value) b[kNatural[k]] = int16_t(value);
      }
    }
    if (eobrun > 0) {
      for (; k <= scan.se; ++k) {
        int16_t& v = b[kNatural[k]];
        if (v != 0) refine_nonzero(v);
      }
      --eobrun;
    }
  }

  void unit(Component& c, int bx, int by) {
    if (!frame.progressive) return sequential(c, bx, by);
    int16_t* b = block(c, bx, by);
    if (scan.ss == 0) return scan.ah == 0 ? dc_first(c, b) : dc_refine(b);
    return scan.ah == 0 ? ac_first(c, b) : ac_refine(c, b);
  }
};

}  // namespace

size_t decode_scan(const uint8_t* data, size_t size, size_t pos, Frame& frame, const Tables& tables, const Scan& scan) {
  BitReader br(data, size, pos);
  Decoder dec{br, frame, tables, scan};
  for (int i = 0; i < scan.ncomp; ++i) frame.comp[scan.comp[i]].dc_pred = 0;
  const bool single = scan.ncomp == 1;
  const Component& c0 = frame.comp[scan.comp[0]];
  const int units_x = single ? (c0.width + 7) / 8 : frame.mcus_x;
  const int units_y = single ? (c0.height + 7) / 8 : frame.mcus_y;
  const int64_t total = int64_t(units_x) * units_y;
  const int ri = tables.restart_interval;
  int next_rst = 0;
  for (int64_t i = 0; i < total; ++i) {
    if (ri > 0 && i > 0 && i % ri == 0) {
      br.restart(next_rst);
      next_rst = (next_rst + 1) & 7;
      dec.eobrun = 0;
      for (int j = 0; j < scan.ncomp; ++j) frame.comp[scan.comp[j]].dc_pred = 0;
    }
    const int ux = int(i % units_x), uy = int(i / units_x);
    if (single) {
      dec.unit(frame.comp[scan.comp[0]], ux, uy);
    } else {
      for (int j = 0; j < scan.ncomp; ++j) {
        Component& c = frame.comp[scan.comp[j]];
        for (int by = 0; by < c.v; ++by) {
          for (int bx = 0; bx < c.h; ++bx) dec.unit(c, ux * c.h + bx, uy * c.v + by);
        }
      }
    }
    if (br.overrun()) corrupt("entropy-coded data ends early");
  }
  return br.next_marker();
}

}  // namespace edgevlm::codec::jpeg
