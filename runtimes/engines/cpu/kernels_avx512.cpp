// AVX-512 (F/BW/VL) + VNNI kernels. Integer dots use vpdpbusd (unsigned x signed bytes): the
// activation codes are stored biased (a = q + 128, unsigned) and the int4 nibbles u (0..15) are
// the signed operand, so every product is exact; the offsets come back out per run of inputs:
//   sum (a - e)(u - z) = sum a*u - z * sum a - e * sum (u - z)
// with sum a from QuantizedActs::sums and sum (u - z) from PackedQ4::wsum. Lanes are output
// channels (16 per register), so no horizontal sums are needed and each float combination is the
// scalar reference's, lane by lane.
#include <immintrin.h>

#include <cstring>

#include "engines/cpu/kernels_isa.h"

// GCC 12 warns about the deliberately undefined registers inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace edgevlm::cpu::detail {
namespace {

inline int32_t load32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline __mmask16 lane_mask(int o0, int O) {
  const int n = std::min(kBlockO, O - o0);
  return __mmask16((1u << n) - 1u);
}

inline __m512 load_bias(const float* bias, int o0, __mmask16 mk) {
  return bias ? _mm512_maskz_loadu_ps(mk, bias + o0) : _mm512_setzero_ps();
}

// ---- activation quantization ---------------------------------------------------------------------

void quantize_token(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= k_in; k += 16) {
      __m512 v = _mm512_loadu_ps(r + k);
      vlo = _mm512_min_ps(vlo, v);
      vhi = _mm512_max_ps(vhi, v);
    }
    float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
    for (; k < k_in; ++k) {
      lo = std::min(lo, r[k]);
      hi = std::max(hi, r[k]);
    }
    const TokenParams p = token_params(lo, hi);
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    const __m512 vs = _mm512_set1_ps(p.scale), vzp = _mm512_set1_ps(p.zp);
    const __m512 qmin = _mm512_set1_ps(-128.0f), qmax = _mm512_set1_ps(127.0f);
    const __m512i bias = _mm512_set1_epi32(128);
    for (k = 0; k < a.K; k += 16) {
      const __mmask16 mk = k + 16 <= k_in ? __mmask16(0xFFFF) : (k < k_in ? __mmask16((1u << (k_in - k)) - 1u) : 0);
      __m512 v = _mm512_maskz_loadu_ps(mk, r + k);
      __m512 q = _mm512_roundscale_ps(_mm512_div_ps(v, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, vzp), qmin), qmax);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(c + k),
                       _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(q), bias)));
    }
    a.scales[m] = p.scale;
    a.zero[m] = int(p.zp) + 128;
    row_sums(a, m);
  }
}

void quantize_block32(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  const __m512 qmin = _mm512_set1_ps(-127.0f), qmax = _mm512_set1_ps(127.0f);
  const __m512i bias = _mm512_set1_epi32(128);
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    for (int b = 0; b < a.K / 32; ++b) {
      const int k = b * 32;
      auto mask_at = [&](int kk) -> __mmask16 {
        return kk + 16 <= k_in ? __mmask16(0xFFFF) : (kk < k_in ? __mmask16((1u << (k_in - kk)) - 1u) : 0);
      };
      __m512 v0 = _mm512_maskz_loadu_ps(mask_at(k), r + k), v1 = _mm512_maskz_loadu_ps(mask_at(k + 16), r + k + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      const BlockParams p = block_params(amax);
      const __m512 inv = _mm512_set1_ps(p.inv);
      for (int h = 0; h < 2; ++h) {
        __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(h ? v1 : v0, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(q, qmin), qmax);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(c + k + 16 * h),
                         _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(q), bias)));
      }
      a.scales[size_t(m) * (a.K / 32) + b] = p.scale;
    }
    a.zero[m] = 128;
    row_sums(a, m);
  }
}

// ---- int4 x int8 -------------------------------------------------------------------------------

template <int MT>
void q4_tile(const QuantizedActs& a, const PackedQ4& w, int m0, int b, const float* bias, float* y, size_t ldy) {
  const int K = w.K;
  const bool blk = a.scheme == ActQuant::block32;
  const int unit = blk ? 32 : w.group;
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * K;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO;
  const int16_t* wsum = w.wsum.data() + size_t(b) * (K / w.wsum_len) * kBlockO;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO : nullptr;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const uint8_t* ar[MT];
  for (int r = 0; r < MT; ++r) ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
  __m512 facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = _mm512_setzero_ps();
  for (int k0 = 0; k0 < K; k0 += unit) {
    __m512i acc[MT];
    for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_si512();
    for (int k = k0; k < k0 + unit; k += 8) {
      const __m512i v = _mm512_loadu_si512(wc + size_t(k) * 8);
      const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
      for (int r = 0; r < MT; ++r) {
        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(load32(ar[r] + k)), lo);
        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(load32(ar[r] + k + 4)), hi);
      }
    }
    const int g = k0 / w.group;
    __m512i ws_run = _mm512_setzero_si512();
    for (int t = k0 / w.wsum_len; t < (k0 + unit) / w.wsum_len; ++t)
      ws_run = _mm512_add_epi32(ws_run, _mm512_cvtepi16_epi32(_mm256_loadu_si256(
                                            reinterpret_cast<const __m256i*>(wsum + size_t(t) * kBlockO))));
    const __m512 sw = _mm512_loadu_ps(ws + size_t(g) * kBlockO);
    const __m512i z = wz ? _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wz + size_t(g) * kBlockO)))
                         : _mm512_set1_epi32(8);
    for (int r = 0; r < MT; ++r) {
      const int32_t sa = act_sum(a, m0 + r, k0, unit);
      __m512i dot = _mm512_sub_epi32(acc[r], wz ? _mm512_mullo_epi32(z, _mm512_set1_epi32(sa)) : _mm512_set1_epi32(8 * sa));
      dot = _mm512_sub_epi32(dot, _mm512_mullo_epi32(ws_run, _mm512_set1_epi32(a.zero[m0 + r])));
      if (blk) {
        const __m512 bs = _mm512_mul_ps(_mm512_set1_ps(a.scales[size_t(m0 + r) * (a.K / 32) + k0 / 32]), sw);
        facc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), bs, facc[r]);
      } else {
        facc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sw, facc[r]);
      }
    }
  }
  const int o0 = b * kBlockO;
  const __mmask16 mk = lane_mask(o0, w.O);
  const __m512 vb = load_bias(bias, o0, mk);
  for (int r = 0; r < MT; ++r) {
    const __m512 out = blk ? _mm512_add_ps(facc[r], vb) : _mm512_fmadd_ps(facc[r], _mm512_set1_ps(a.scales[m0 + r]), vb);
    _mm512_mask_storeu_ps(y + size_t(m0 + r) * ldy + o0, mk, out);
  }
}

void gemm_q4(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b) {
    int m = 0;
    for (; m + 4 <= a.M; m += 4) q4_tile<4>(a, w, m, b, bias, y, ldy);
    switch (a.M - m) {
      case 3: q4_tile<3>(a, w, m, b, bias, y, ldy); break;
      case 2: q4_tile<2>(a, w, m, b, bias, y, ldy); break;
      case 1: q4_tile<1>(a, w, m, b, bias, y, ldy); break;
      default: break;
    }
  }
}

// ---- int8 x int8 -------------------------------------------------------------------------------

template <int MT>
void q8_tile(const QuantizedActs& a, const PackedQ8& w, int m0, int b, const float* bias, float* y, size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K;
  const uint8_t* ar[MT];
  __m512i acc[MT];
  for (int r = 0; r < MT; ++r) {
    ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
    acc[r] = _mm512_setzero_si512();
  }
  for (int k = 0; k < w.K; k += 4) {
    const __m512i v = _mm512_loadu_si512(wc + size_t(k) * 16);
    for (int r = 0; r < MT; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(load32(ar[r] + k)), v);
  }
  const int o0 = b * kBlockO;
  const __mmask16 mk = lane_mask(o0, w.O);
  const __m512 vb = load_bias(bias, o0, mk);
  const __m512i wsum = _mm512_loadu_si512(w.wsum.data() + o0);
  const __m512 sw = _mm512_loadu_ps(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) {
    const __m512i dot = _mm512_sub_epi32(acc[r], _mm512_mullo_epi32(wsum, _mm512_set1_epi32(a.zero[m0 + r])));
    const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), sw);
    _mm512_mask_storeu_ps(y + size_t(m0 + r) * ldy + o0, mk, _mm512_fmadd_ps(t, _mm512_set1_ps(a.scales[m0 + r]), vb));
  }
}

void gemm_q8(const QuantizedActs& a, const PackedQ8& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b) {
    int m = 0;
    for (; m + 4 <= a.M; m += 4) q8_tile<4>(a, w, m, b, bias, y, ldy);
    switch (a.M - m) {
      case 3: q8_tile<3>(a, w, m, b, bias, y, ldy); break;
      case 2: q8_tile<2>(a, w, m, b, bias, y, ldy); break;
      case 1: q8_tile<1>(a, w, m, b, bias, y, ldy); break;
      default: break;
    }
  }
}

// ---- weight-only -------------------------------------------------------------------------------

template <int MT>
void q4f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ4& w, int b, const float* bias, float* y,
              size_t ldy) {
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * w.K;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO : nullptr;
  const __m512i nib = _mm512_set1_epi32(0x0F);
  __m512 facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = _mm512_setzero_ps();
  for (int g = 0; g * w.group < k_in; ++g) {
    const __m512i z = wz ? _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wz + size_t(g) * kBlockO)))
                         : _mm512_set1_epi32(8);
    __m512 gacc[MT];
    for (int r = 0; r < MT; ++r) gacc[r] = _mm512_setzero_ps();
    const int kend = std::min(k_in, (g + 1) * w.group);
    for (int k = g * w.group; k < kend; k += 8) {
      const __m512i v = _mm512_loadu_si512(wc + size_t(k) * 8);
      const int n = std::min(8, kend - k);
      for (int i = 0; i < n; ++i) {
        const __m512i u = _mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(8 * (i & 3) + 4 * (i >> 2))), nib);
        const __m512 wf = _mm512_cvtepi32_ps(_mm512_sub_epi32(u, z));
        for (int r = 0; r < MT; ++r)
          gacc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[size_t(m0 + r) * ldx + k + i]), wf, gacc[r]);
      }
    }
    const __m512 sw = _mm512_loadu_ps(ws + size_t(g) * kBlockO);
    for (int r = 0; r < MT; ++r) facc[r] = _mm512_fmadd_ps(gacc[r], sw, facc[r]);
  }
  const int o0 = b * kBlockO;
  const __mmask16 mk = lane_mask(o0, w.O);
  const __m512 vb = load_bias(bias, o0, mk);
  for (int r = 0; r < MT; ++r) _mm512_mask_storeu_ps(y + size_t(m0 + r) * ldy + o0, mk, _mm512_add_ps(facc[r], vb));
}

void gemm_q4_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ4& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b) {
    int m = 0;
    for (; m + 8 <= M; m += 8) q4f_tile<8>(x, ldx, m, k_in, w, b, bias, y, ldy);
    for (; m + 4 <= M; m += 4) q4f_tile<4>(x, ldx, m, k_in, w, b, bias, y, ldy);
    for (; m < M; ++m) q4f_tile<1>(x, ldx, m, k_in, w, b, bias, y, ldy);
  }
}

template <int MT>
void q8f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ8& w, int b, const float* bias, float* y,
              size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K;
  __m512 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
  for (int k = 0; k < k_in; k += 4) {
    const __m512i v = _mm512_loadu_si512(wc + size_t(k) * 16);
    const int n = std::min(4, k_in - k);
    for (int i = 0; i < n; ++i) {
      const __m512 wf = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32(v, _mm512_set1_epi32(24 - 8 * i)), 24));
      for (int r = 0; r < MT; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[size_t(m0 + r) * ldx + k + i]), wf, acc[r]);
    }
  }
  const int o0 = b * kBlockO;
  const __mmask16 mk = lane_mask(o0, w.O);
  const __m512 vb = load_bias(bias, o0, mk);
  const __m512 sw = _mm512_loadu_ps(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) _mm512_mask_storeu_ps(y + size_t(m0 + r) * ldy + o0, mk, _mm512_fmadd_ps(acc[r], sw, vb));
}

void gemm_q8_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ8& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b) {
    int m = 0;
    for (; m + 8 <= M; m += 8) q8f_tile<8>(x, ldx, m, k_in, w, b, bias, y, ldy);
    for (; m + 4 <= M; m += 4) q8f_tile<4>(x, ldx, m, k_in, w, b, bias, y, ldy);
    for (; m < M; ++m) q8f_tile<1>(x, ldx, m, k_in, w, b, bias, y, ldy);
  }
}

// ---- float -------------------------------------------------------------------------------------

float dot_f32(const float* a, const float* b, int n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mk = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1u);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + i), _mm512_maskz_loadu_ps(mk, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

void gemm_f32(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias, float* y,
              size_t ldy, int o0, int o1) {
  for (int o = o0; o < o1; ++o)
    for (int m = 0; m < M; ++m)
      y[size_t(m) * ldy + o] = dot_f32(x + size_t(m) * ldx, w + size_t(o) * ldw, K) + (bias ? bias[o] : 0.0f);
}

void f32_to_f16(const float* x, uint16_t* h, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) h[i] = f32_to_f16_scalar(x[i]);
}

void f16_to_f32(const uint16_t* h, float* x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
  for (; i < n; ++i) x[i] = f16_to_f32_scalar(h[i]);
}

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels k{"avx512",    quantize_token, quantize_block32, gemm_q4,    gemm_q8,    gemm_q4_f32,
                         gemm_q8_f32, gemm_f32,       dot_f32,          f32_to_f16, f16_to_f32,
                         attend_avx2, silu_mul_avx2,  attend_f16_avx2};
  return &k;
}

}  // namespace edgevlm::cpu::detail
