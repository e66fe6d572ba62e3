// JPEG samples to pixels: the accurate integer IDCT, chroma upsampling and color conversion, each
// with libjpeg-turbo's default arithmetic so the result equals Pillow's. See codec_jpeg.h.
#include <algorithm>
#include <cstring>

#include "core/codec_jpeg.h"

namespace edgevlm::codec::jpeg {
namespace {

// The 8-point IDCT of Loeffler, Ligtenberg and Moschytz as the islow IDCT computes it: constants
// round(c * 2^13) of sqrt(2) times sums of the cosines c_k = cos(k pi / 16); 2 extra fraction
// bits kept between the column and the row pass; integer products and sums, so exact.
constexpr int kConstBits = 13, kPass1Bits = 2;
constexpr int64_t kC0_298631336 = 2446;   // sqrt(2) * (-c1 + c3 + c5 - c7)
constexpr int64_t kC0_390180644 = 3196;   // sqrt(2) * (c5 - c3)
constexpr int64_t kC0_541196100 = 4433;   // sqrt(2) * c6
constexpr int64_t kC0_765366865 = 6270;   // sqrt(2) * (c2 - c6)
constexpr int64_t kC0_899976223 = 7373;   // sqrt(2) * (c7 - c3)
constexpr int64_t kC1_175875602 = 9633;   // sqrt(2) * c3
constexpr int64_t kC1_501321110 = 12299;  // sqrt(2) * (c1 + c3 - c5 - c7)
constexpr int64_t kC1_847759065 = 15137;  // sqrt(2) * (-c2 - c6)
constexpr int64_t kC1_961570560 = 16069;  // sqrt(2) * (c3 + c5)
constexpr int64_t kC2_053119869 = 16819;  // sqrt(2) * (c1 + c3 - c5 + c7)
constexpr int64_t kC2_562915447 = 20995;  // sqrt(2) * (c1 + c3)
constexpr int64_t kC3_072711026 = 25172;  // sqrt(2) * (c1 + c3 + c5 - c7)

// The 1-D IDCT of x[0..7], results scaled by 2^13 (even part from x0, x2, x4, x6; odd from the rest).
inline void idct_1d(const int64_t* x, int64_t* y) {
  const int64_t z1 = (x[2] + x[6]) * kC0_541196100;
  const int64_t e2 = z1 - x[6] * kC1_847759065, e3 = z1 + x[2] * kC0_765366865;
  const int64_t e0 = (x[0] + x[4]) * (int64_t(1) << kConstBits), e1 = (x[0] - x[4]) * (int64_t(1) << kConstBits);
  const int64_t t10 = e0 + e3, t13 = e0 - e3, t11 = e1 + e2, t12 = e1 - e2;

  const int64_t a7 = x[7], a5 = x[5], a3 = x[3], a1 = x[1];
  const int64_t s1 = a7 + a1, s2 = a5 + a3, s3 = a7 + a3, s4 = a5 + a1;
  const int64_t z5 = (s3 + s4) * kC1_175875602;
  const int64_t p1 = -s1 * kC0_899976223, p2 = -s2 * kC2_562915447;
  const int64_t p3 = -s3 * kC1_961570560 + z5, p4 = -s4 * kC0_390180644 + z5;
  const int64_t o0 = a7 * kC0_298631336 + p1 + p3, o1 = a5 * kC2_053119869 + p2 + p4;
  const int64_t o2 = a3 * kC3_072711026 + p2 + p3, o3 = a1 * kC1_501321110 + p1 + p4;

  y[0] = t10 + o3, y[7] = t10 - o3;
  y[1] = t11 + o2, y[6] = t11 - o2;
  y[2] = t12 + o1, y[5] = t12 - o1;
  y[3] = t13 + o0, y[4] = t13 - o0;
}

inline int64_t descale(int64_t v, int n) { return (v + (int64_t(1) << (n - 1))) >> n; }
inline uint8_t clamp255(int64_t v) { return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v); }

// YCbCr -> RGB in 16-bit fixed point: R = Y + 1.402 Cr', G = Y - 0.34414 Cb' - 0.71414 Cr',
// B = Y + 1.772 Cb' (Cb' = Cb - 128), the R and B terms rounded per value, G once over the sum.
struct YccTables {
  int cr_r[256], cb_b[256];
  int32_t cr_g[256], cb_g[256];
  YccTables() {
    constexpr int kBits = 16;
    constexpr int32_t kHalf = 1 << (kBits - 1);
    const auto fix = [](double v) { return int32_t(v * (1 << kBits) + 0.5); };
    for (int i = 0; i < 256; ++i) {
      const int32_t x = i - 128;
      cr_r[i] = int((fix(1.40200) * x + kHalf) >> kBits);
      cb_b[i] = int((fix(1.77200) * x + kHalf) >> kBits);
      cr_g[i] = -fix(0.71414) * x;
      cb_g[i] = -fix(0.34414) * x + kHalf;
    }
  }
};

const YccTables& ycc_tables() {
  static const YccTables t;
  return t;
}

// Pillow's CMYK -> RGB: nk - nk * c / 255 with its rounding divide by 255.
inline uint8_t cmyk_channel(int c, int nk) {
  const int t = c * nk + 128;
  return clamp255(nk - (((t >> 8) + t) >> 8));
}

// Output row y of component c at full resolution (frame width samples), in `out` (>= width + 1
// samples) unless the component is full size (then a pointer into its plane).
const uint8_t* upsample_row(const Frame& f, const Component& c, int y, uint8_t* out, int* colsum) {
  const size_t stride = size_t(c.blocks_w) * 8;
  const int hr = f.hmax / c.h, vr = f.vmax / c.v;
  const uint8_t* plane = c.plane.data();
  if (hr == 1 && vr == 1) return plane + size_t(y) * stride;
  const int cw = c.width, iy = y / vr;
  const uint8_t* in = plane + size_t(iy) * stride;
  // Vertical neighbour for the 2:1 triangle filters: the row above for the upper output row of a
  // pair, below for the lower one; the image's first and last rows repeat.
  const bool upper = y % 2 == 0;
  const int far_row = upper ? std::max(iy - 1, 0) : std::min(iy + 1, c.height - 1);
  const uint8_t* far = plane + size_t(far_row) * stride;
  if (hr == 2 && vr == 1 && cw > 2) {
    out[0] = in[0];
    out[1] = uint8_t((in[0] * 3 + in[1] + 2) >> 2);
    for (int i = 1; i < cw - 1; ++i) {
      const int v = in[i] * 3;
      out[2 * i] = uint8_t((v + in[i - 1] + 1) >> 2);
      out[2 * i + 1] = uint8_t((v + in[i + 1] + 2) >> 2);
    }
    out[2 * cw - 2] = uint8_t((in[cw - 1] * 3 + in[cw - 2] + 1) >> 2);
    out[2 * cw - 1] = in[cw - 1];
    return out;
  }
  if (hr == 1 && vr == 2) {
    const int bias = upper ? 1 : 2;
    for (int i = 0; i < cw; ++i) out[i] = uint8_t((in[i] * 3 + far[i] + bias) >> 2);
    return out;
  }
  if (hr == 2 && vr == 2 && cw > 2) {
    for (int i = 0; i < cw; ++i) colsum[i] = in[i] * 3 + far[i];
    out[0] = uint8_t((colsum[0] * 4 + 8) >> 4);
    out[1] = uint8_t((colsum[0] * 3 + colsum[1] + 7) >> 4);
    for (int i = 1; i < cw - 1; ++i) {
      const int v = colsum[i] * 3;
      out[2 * i] = uint8_t((v + colsum[i - 1] + 8) >> 4);
      out[2 * i + 1] = uint8_t((v + colsum[i + 1] + 7) >> 4);
    }
    out[2 * cw - 2] = uint8_t((colsum[cw - 1] * 3 + colsum[cw - 2] + 8) >> 4);
    out[2 * cw - 1] = uint8_t((colsum[cw - 1] * 4 + 7) >> 4);
    return out;
  }
  for (int x = 0; x < f.width; ++x) out[x] = in[x / hr];  // replication (any integral ratio)
  return out;
}

}  // namespace

void idct_islow(const int16_t* coef, const uint16_t* quant, uint8_t* out, size_t stride) {
  int64_t ws[64];
  int64_t x[8], y[8];
  for (int col = 0; col < 8; ++col) {
    bool ac_zero = true;
    for (int k = 1; k < 8; ++k) ac_zero = ac_zero && coef[8 * k + col] == 0;
    if (ac_zero) {
      const int64_t dc = int64_t(coef[col]) * quant[col] * (1 << kPass1Bits);
      for (int k = 0; k < 8; ++k) ws[8 * k + col] = dc;
      continue;
    }
    for (int k = 0; k < 8; ++k) x[k] = int64_t(coef[8 * k + col]) * quant[8 * k + col];
    idct_1d(x, y);
    for (int k = 0; k < 8; ++k) ws[8 * k + col] = descale(y[k], kConstBits - kPass1Bits);
  }
  for (int row = 0; row < 8; ++row) {
    const int64_t* w = ws + 8 * row;
    uint8_t* o = out + size_t(row) * stride;
    if (!w[1] && !w[2] && !w[3] && !w[4] && !w[5] && !w[6] && !w[7]) {
      const uint8_t v = clamp255(descale(w[0], kPass1Bits + 3) + 128);
      std::memset(o, v, 8);
      continue;
    }
    idct_1d(w, y);
    for (int k = 0; k < 8; ++k) o[k] = clamp255(descale(y[k], kConstBits + kPass1Bits + 3) + 128);
  }
}

void planes_to_rgb(const Frame& f, uint8_t* rgb) {
  const int w = f.width;
  std::vector<uint8_t> rows(size_t(f.ncomp) * size_t(w + 16));
  std::vector<int> colsum(size_t(w) + 16);
  const YccTables& t = ycc_tables();
  for (int y = 0; y < f.height; ++y) {
    const uint8_t* s[4] = {nullptr, nullptr, nullptr, nullptr};
    for (int c = 0; c < f.ncomp; ++c) {
      s[c] = upsample_row(f, f.comp[c], y, rows.data() + size_t(c) * size_t(w + 16), colsum.data());
    }
    uint8_t* o = rgb + size_t(y) * size_t(w) * 3;
    switch (f.color) {
      case ColorSpace::kGray:
        for (int x = 0; x < w; ++x) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = s[0][x];
        break;
      case ColorSpace::kRgb:
        for (int x = 0; x < w; ++x) o[3 * x] = s[0][x], o[3 * x + 1] = s[1][x], o[3 * x + 2] = s[2][x];
        break;
      case ColorSpace::kYCbCr:
        for (int x = 0; x < w; ++x) {
          const int yy = s[0][x], cb = s[1][x], cr = s[2][x];
          o[3 * x] = clamp255(yy + t.cr_r[cr]);
          o[3 * x + 1] = clamp255(yy + ((t.cb_g[cb] + t.cr_g[cr]) >> 16));
          o[3 * x + 2] = clamp255(yy + t.cb_b[cb]);
        }
        break;
      case ColorSpace::kCmyk:  // Adobe's inverted CMYK, inverted back by Pillow ("CMYK;I")
        for (int x = 0; x < w; ++x) {
          const int nk = s[3][x];
          for (int c = 0; c < 3; ++c) o[3 * x + c] = cmyk_channel(255 - s[c][x], nk);
        }
        break;
      case ColorSpace::kYcck:  // YCC -> (inverted) CMY as libjpeg does, then as kCmyk
        for (int x = 0; x < w; ++x) {
          const int yy = s[0][x], cb = s[1][x], cr = s[2][x], nk = s[3][x];
          o[3 * x] = cmyk_channel(clamp255(yy + t.cr_r[cr]), nk);
          o[3 * x + 1] = cmyk_channel(clamp255(yy + ((t.cb_g[cb] + t.cr_g[cr]) >> 16)), nk);
          o[3 * x + 2] = cmyk_channel(clamp255(yy + t.cb_b[cb]), nk);
        }
        break;
    }
  }
}

}  // namespace edgevlm::codec::jpeg
