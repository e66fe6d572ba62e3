// aarch64 NEON + dotprod kernels (ARMv8.2-A). Same layout and arithmetic as the x86 sets, on
// quarters (4 channels, one 128-bit register) of each 16-channel block. int4: udot of the biased
// activation bytes (0..255) with the nibbles (0..15), offsets removed as in kernels_avx512.cpp.
// int8: sdot of the signed activation codes (a ^ 0x80) with the signed weights.
#include <arm_neon.h>

#include <cstring>

#include "engines/cpu/kernels_isa.h"

namespace edgevlm::cpu::detail {
namespace {

inline float32x4_t load_upto(const float* p, int n) {
  if (n >= 4) return vld1q_f32(p);
  float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return vld1q_f32(t);
}

inline void store_upto(float* p, int n, float32x4_t v) {
  if (n >= 4) {
    vst1q_f32(p, v);
    return;
  }
  float t[4];
  vst1q_f32(t, v);
  for (int i = 0; i < n; ++i) p[i] = t[i];
}

inline void store_codes8(uint8_t* c, int32x4_t a, int32x4_t b) {  // 8 int32 in 0..255 -> bytes
  const uint16x8_t w = vcombine_u16(vmovn_u32(vreinterpretq_u32_s32(a)), vmovn_u32(vreinterpretq_u32_s32(b)));
  vst1_u8(c, vmovn_u16(w));
}

inline int32x4_t load_u8x4(const uint8_t* p) {
  const int32_t t[4] = {p[0], p[1], p[2], p[3]};
  return vld1q_s32(t);
}

// ---- activation quantization ---------------------------------------------------------------------

void quantize_token(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    float32x4_t vlo = vdupq_n_f32(0.0f), vhi = vdupq_n_f32(0.0f);
    int k = 0;
    for (; k + 4 <= k_in; k += 4) {
      const float32x4_t v = vld1q_f32(r + k);
      vlo = vminq_f32(vlo, v);
      vhi = vmaxq_f32(vhi, v);
    }
    float lo = vminvq_f32(vlo), hi = vmaxvq_f32(vhi);
    for (; k < k_in; ++k) {
      lo = std::min(lo, r[k]);
      hi = std::max(hi, r[k]);
    }
    const TokenParams p = token_params(lo, hi);
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    const float32x4_t vs = vdupq_n_f32(p.scale), vzp = vdupq_n_f32(p.zp);
    const float32x4_t qmin = vdupq_n_f32(-128.0f), qmax = vdupq_n_f32(127.0f);
    const int32x4_t bias = vdupq_n_s32(128);
    for (k = 0; k < a.K; k += 8) {
      int32x4_t q[2];
      for (int j = 0; j < 2; ++j) {
        float32x4_t f = vrndnq_f32(vdivq_f32(load_upto(r + k + 4 * j, k_in - k - 4 * j), vs));
        f = vminq_f32(vmaxq_f32(vaddq_f32(f, vzp), qmin), qmax);
        q[j] = vaddq_s32(vcvtq_s32_f32(f), bias);
      }
      store_codes8(c + k, q[0], q[1]);
    }
    a.scales[m] = p.scale;
    a.zero[m] = int(p.zp) + 128;
    row_sums(a, m);
  }
}

void quantize_block32(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  const float32x4_t qmin = vdupq_n_f32(-127.0f), qmax = vdupq_n_f32(127.0f);
  const int32x4_t bias = vdupq_n_s32(128);
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    for (int b = 0; b < a.K / 32; ++b) {
      const int k = b * 32;
      float32x4_t v[8];
      float32x4_t am = vdupq_n_f32(0.0f);
      for (int j = 0; j < 8; ++j) {
        v[j] = load_upto(r + k + 4 * j, k_in - k - 4 * j);
        am = vmaxq_f32(am, vabsq_f32(v[j]));
      }
      const BlockParams p = block_params(vmaxvq_f32(am));
      const float32x4_t inv = vdupq_n_f32(p.inv);
      for (int j = 0; j < 8; j += 2) {
        int32x4_t q[2];
        for (int t = 0; t < 2; ++t) {
          float32x4_t f = vrndnq_f32(vmulq_f32(v[j + t], inv));
          f = vminq_f32(vmaxq_f32(f, qmin), qmax);
          q[t] = vaddq_s32(vcvtq_s32_f32(f), bias);
        }
        store_codes8(c + k + 4 * j, q[0], q[1]);
      }
      a.scales[size_t(m) * (a.K / 32) + b] = p.scale;
    }
    a.zero[m] = 128;
    row_sums(a, m);
  }
}

// ---- int4 x int8 -------------------------------------------------------------------------------

template <int MT>
void q4_tile(const QuantizedActs& a, const PackedQ4& w, int m0, int b, int qt, const float* bias, float* y,
             size_t ldy) {
  const int K = w.K;
  const bool blk = a.scheme == ActQuant::block32;
  const int unit = blk ? 32 : w.group;
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * K + 16 * qt;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO + 4 * qt;
  const int16_t* wsum = w.wsum.data() + size_t(b) * (K / w.wsum_len) * kBlockO + 4 * qt;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO + 4 * qt : nullptr;
  const uint8x16_t nib = vdupq_n_u8(0x0F);
  const uint8_t* ar[MT];
  for (int r = 0; r < MT; ++r) ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
  float32x4_t facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = vdupq_n_f32(0.0f);
  for (int k0 = 0; k0 < K; k0 += unit) {
    uint32x4_t acc[MT];
    for (int r = 0; r < MT; ++r) acc[r] = vdupq_n_u32(0);
    for (int k = k0; k < k0 + unit; k += 16) {
      const uint8x16_t v0 = vld1q_u8(wc + size_t(k) * 8), v1 = vld1q_u8(wc + size_t(k + 8) * 8);
      const uint8x16_t lo0 = vandq_u8(v0, nib), hi0 = vshrq_n_u8(v0, 4);
      const uint8x16_t lo1 = vandq_u8(v1, nib), hi1 = vshrq_n_u8(v1, 4);
      for (int r = 0; r < MT; ++r) {
        const uint8x16_t av = vld1q_u8(ar[r] + k);
        acc[r] = vdotq_laneq_u32(acc[r], lo0, av, 0);
        acc[r] = vdotq_laneq_u32(acc[r], hi0, av, 1);
        acc[r] = vdotq_laneq_u32(acc[r], lo1, av, 2);
        acc[r] = vdotq_laneq_u32(acc[r], hi1, av, 3);
      }
    }
    const int g = k0 / w.group;
    int32x4_t ws_run = vdupq_n_s32(0);
    for (int t = k0 / w.wsum_len; t < (k0 + unit) / w.wsum_len; ++t)
      ws_run = vaddq_s32(ws_run, vmovl_s16(vld1_s16(wsum + size_t(t) * kBlockO)));
    const float32x4_t sw = vld1q_f32(ws + size_t(g) * kBlockO);
    const int32x4_t z = wz ? load_u8x4(wz + size_t(g) * kBlockO) : vdupq_n_s32(8);
    for (int r = 0; r < MT; ++r) {
      const int32_t sa = act_sum(a, m0 + r, k0, unit);
      int32x4_t dot = vsubq_s32(vreinterpretq_s32_u32(acc[r]), vmulq_n_s32(z, sa));
      dot = vsubq_s32(dot, vmulq_n_s32(ws_run, a.zero[m0 + r]));
      if (blk) {
        const float32x4_t bs = vmulq_f32(vdupq_n_f32(a.scales[size_t(m0 + r) * (a.K / 32) + k0 / 32]), sw);
        facc[r] = vfmaq_f32(facc[r], vcvtq_f32_s32(dot), bs);
      } else {
        facc[r] = vfmaq_f32(facc[r], vcvtq_f32_s32(dot), sw);
      }
    }
  }
  const int o0 = b * kBlockO + 4 * qt, n = w.O - o0;
  const float32x4_t vb = bias ? load_upto(bias + o0, n) : vdupq_n_f32(0.0f);
  for (int r = 0; r < MT; ++r) {
    const float32x4_t out = blk ? vaddq_f32(facc[r], vb) : vfmaq_f32(vb, facc[r], vdupq_n_f32(a.scales[m0 + r]));
    store_upto(y + size_t(m0 + r) * ldy + o0, n, out);
  }
}

void gemm_q4(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int qt = 0; qt < 4; ++qt) {
      if (b * kBlockO + 4 * qt >= w.O) break;
      int m = 0;
      for (; m + 4 <= a.M; m += 4) q4_tile<4>(a, w, m, b, qt, bias, y, ldy);
      for (; m < a.M; ++m) q4_tile<1>(a, w, m, b, qt, bias, y, ldy);
    }
}

// ---- int8 x int8 -------------------------------------------------------------------------------

template <int MT>
void q8_tile(const QuantizedActs& a, const PackedQ8& w, int m0, int b, int qt, const float* bias, float* y,
             size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K + 16 * qt;
  const uint8x16_t flip = vdupq_n_u8(0x80);
  const uint8_t* ar[MT];
  int32x4_t acc[MT];
  for (int r = 0; r < MT; ++r) {
    ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
    acc[r] = vdupq_n_s32(0);
  }
  for (int k = 0; k < w.K; k += 16) {
    int8x16_t v[4];
    for (int j = 0; j < 4; ++j) v[j] = vld1q_s8(wc + size_t(k + 4 * j) * 16);
    for (int r = 0; r < MT; ++r) {
      const int8x16_t q = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(ar[r] + k), flip));
      acc[r] = vdotq_laneq_s32(acc[r], v[0], q, 0);
      acc[r] = vdotq_laneq_s32(acc[r], v[1], q, 1);
      acc[r] = vdotq_laneq_s32(acc[r], v[2], q, 2);
      acc[r] = vdotq_laneq_s32(acc[r], v[3], q, 3);
    }
  }
  const int o0 = b * kBlockO + 4 * qt, n = w.O - o0;
  const float32x4_t vb = bias ? load_upto(bias + o0, n) : vdupq_n_f32(0.0f);
  const int32x4_t wsum = vld1q_s32(w.wsum.data() + o0);
  const float32x4_t sw = vld1q_f32(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) {
    const int32x4_t dot = vsubq_s32(acc[r], vmulq_n_s32(wsum, a.zero[m0 + r] - 128));
    const float32x4_t t = vmulq_f32(vcvtq_f32_s32(dot), sw);
    store_upto(y + size_t(m0 + r) * ldy + o0, n, vfmaq_f32(vb, t, vdupq_n_f32(a.scales[m0 + r])));
  }
}

void gemm_q8(const QuantizedActs& a, const PackedQ8& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int qt = 0; qt < 4; ++qt) {
      if (b * kBlockO + 4 * qt >= w.O) break;
      int m = 0;
      for (; m + 4 <= a.M; m += 4) q8_tile<4>(a, w, m, b, qt, bias, y, ldy);
      for (; m < a.M; ++m) q8_tile<1>(a, w, m, b, qt, bias, y, ldy);
    }
}

// ---- weight-only -------------------------------------------------------------------------------

template <int MT>
void q4f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ4& w, int b, int qt, const float* bias,
              float* y, size_t ldy) {
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * w.K + 16 * qt;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO + 4 * qt;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO + 4 * qt : nullptr;
  const uint32x4_t nib = vdupq_n_u32(0x0F);
  float32x4_t facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = vdupq_n_f32(0.0f);
  for (int g = 0; g * w.group < k_in; ++g) {
    const int32x4_t z = wz ? load_u8x4(wz + size_t(g) * kBlockO) : vdupq_n_s32(8);
    float32x4_t gacc[MT];
    for (int r = 0; r < MT; ++r) gacc[r] = vdupq_n_f32(0.0f);
    const int kend = std::min(k_in, (g + 1) * w.group);
    for (int k = g * w.group; k < kend; k += 8) {
      const uint32x4_t v = vreinterpretq_u32_u8(vld1q_u8(wc + size_t(k) * 8));
      const int n = std::min(8, kend - k);
      for (int i = 0; i < n; ++i) {
        const uint32x4_t u = vandq_u32(vshlq_u32(v, vdupq_n_s32(-(8 * (i & 3) + 4 * (i >> 2)))), nib);
        const float32x4_t wf = vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(u), z));
        for (int r = 0; r < MT; ++r) gacc[r] = vfmaq_f32(gacc[r], vdupq_n_f32(x[size_t(m0 + r) * ldx + k + i]), wf);
      }
    }
    const float32x4_t sw = vld1q_f32(ws + size_t(g) * kBlockO);
    for (int r = 0; r < MT; ++r) facc[r] = vfmaq_f32(facc[r], gacc[r], sw);
  }
  const int o0 = b * kBlockO + 4 * qt, n = w.O - o0;
  const float32x4_t vb = bias ? load_upto(bias + o0, n) : vdupq_n_f32(0.0f);
  for (int r = 0; r < MT; ++r) store_upto(y + size_t(m0 + r) * ldy + o0, n, vaddq_f32(facc[r], vb));
}

void gemm_q4_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ4& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int qt = 0; qt < 4; ++qt) {
      if (b * kBlockO + 4 * qt >= w.O) break;
      int m = 0;
      for (; m + 8 <= M; m += 8) q4f_tile<8>(x, ldx, m, k_in, w, b, qt, bias, y, ldy);
      for (; m < M; ++m) q4f_tile<1>(x, ldx, m, k_in, w, b, qt, bias, y, ldy);
    }
}

template <int MT>
void q8f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ8& w, int b, int qt, const float* bias,
              float* y, size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K + 16 * qt;
  float32x4_t acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = vdupq_n_f32(0.0f);
  for (int k = 0; k < k_in; k += 4) {
    const int32x4_t v = vreinterpretq_s32_s8(vld1q_s8(wc + size_t(k) * 16));
    const int n = std::min(4, k_in - k);
    for (int i = 0; i < n; ++i) {
      const float32x4_t wf = vcvtq_f32_s32(vshrq_n_s32(vshlq_s32(v, vdupq_n_s32(24 - 8 * i)), 24));
      for (int r = 0; r < MT; ++r) acc[r] = vfmaq_f32(acc[r], vdupq_n_f32(x[size_t(m0 + r) * ldx + k + i]), wf);
    }
  }
  const int o0 = b * kBlockO + 4 * qt, n = w.O - o0;
  const float32x4_t vb = bias ? load_upto(bias + o0, n) : vdupq_n_f32(0.0f);
  const float32x4_t sw = vld1q_f32(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) store_upto(y + size_t(m0 + r) * ldy + o0, n, vfmaq_f32(vb, acc[r], sw));
}

void gemm_q8_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ8& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int qt = 0; qt < 4; ++qt) {
      if (b * kBlockO + 4 * qt >= w.O) break;
      int m = 0;
      for (; m + 8 <= M; m += 8) q8f_tile<8>(x, ldx, m, k_in, w, b, qt, bias, y, ldy);
      for (; m < M; ++m) q8f_tile<1>(x, ldx, m, k_in, w, b, qt, bias, y, ldy);
    }
}

// ---- float -------------------------------------------------------------------------------------

float dot_f32(const float* a, const float* b, int n) {
  float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 4; ++j) acc[j] = vfmaq_f32(acc[j], vld1q_f32(a + i + 4 * j), vld1q_f32(b + i + 4 * j));
  for (; i < n; i += 4) acc[0] = vfmaq_f32(acc[0], load_upto(a + i, n - i), load_upto(b + i, n - i));
  return vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

void gemm_f32(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias, float* y,
              size_t ldy, int o0, int o1) {
  for (int o = o0; o < o1; ++o)
    for (int m = 0; m < M; ++m)
      y[size_t(m) * ldy + o] = dot_f32(x + size_t(m) * ldx, w + size_t(o) * ldw, K) + (bias ? bias[o] : 0.0f);
}

void f32_to_f16(const float* x, uint16_t* h, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(h + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  for (; i < n; ++i) h[i] = f32_to_f16_scalar(x[i]);
}

void f16_to_f32(const uint16_t* h, float* x, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
  for (; i < n; ++i) x[i] = f16_to_f32_scalar(h[i]);
}

}  // namespace

const Kernels* neon_kernels() {
  static const Kernels k{"neon",      quantize_token, quantize_block32, gemm_q4,    gemm_q8,    gemm_q4_f32,
                         gemm_q8_f32, gemm_f32,       dot_f32,          f32_to_f16, f16_to_f32,
                         attend_ref,  silu_mul_ref,  nullptr};
  return &k;
}

}  // namespace edgevlm::cpu::detail
