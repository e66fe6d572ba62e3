// AVX2 + FMA + F16C kernels of the quantized linear layers (the float ones are in
// kernels_avx2_float.cpp). Same layout and arithmetic as the AVX-512 set, on 8-channel halves of
// each 16-channel block. Integer dots use vpmaddubsw (unsigned byte x signed byte) and vpmaddwd:
// for int4, byte-pair sums are added in 16 bits only as far as they stay below 32767, so every
// dot is exact. int8 weights do not fit vpmaddubsw (2*255*128 > 32767): with many rows their
// biased codes w + 128 are split into nibbles, 16*hi + lo; with few rows weights and activations
// are widened to int16 for vpmaddwd.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engines/cpu/kernels_avx2_common.h"
#include "engines/cpu/kernels_isa.h"

namespace edgevlm::cpu::detail {
namespace {

// ---- activation quantization ---------------------------------------------------------------------

void quantize_token(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= k_in; k += 8) {
      const __m256 v = _mm256_loadu_ps(r + k);
      vlo = _mm256_min_ps(vlo, v);
      vhi = _mm256_max_ps(vhi, v);
    }
    float lo = hmin(vlo), hi = hmax(vhi);
    for (; k < k_in; ++k) {
      lo = std::min(lo, r[k]);
      hi = std::max(hi, r[k]);
    }
    const TokenParams p = token_params(lo, hi);
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    const __m256 vs = _mm256_set1_ps(p.scale), vzp = _mm256_set1_ps(p.zp);
    const __m256 qmin = _mm256_set1_ps(-128.0f), qmax = _mm256_set1_ps(127.0f);
    const __m256i bias = _mm256_set1_epi32(128);
    for (k = 0; k < a.K; k += 8) {
      __m256 q = _mm256_round_ps(_mm256_div_ps(load_upto(r + k, k_in - k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, vzp), qmin), qmax);
      store_codes8(c + k, _mm256_add_epi32(_mm256_cvtps_epi32(q), bias));
    }
    a.scales[m] = p.scale;
    a.zero[m] = int(p.zp) + 128;
    row_sums(a, m);
  }
}

void quantize_block32(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 qmin = _mm256_set1_ps(-127.0f), qmax = _mm256_set1_ps(127.0f);
  const __m256i bias = _mm256_set1_epi32(128);
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    for (int b = 0; b < a.K / 32; ++b) {
      const int k = b * 32;
      __m256 v[4];
      __m256 am = _mm256_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        v[j] = load_upto(r + k + 8 * j, k_in - k - 8 * j);
        am = _mm256_max_ps(am, _mm256_and_ps(v[j], absmask));
      }
      const BlockParams p = block_params(hmax(am));
      const __m256 inv = _mm256_set1_ps(p.inv);
      for (int j = 0; j < 4; ++j) {
        __m256 q = _mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(q, qmin), qmax);
        store_codes8(c + k + 8 * j, _mm256_add_epi32(_mm256_cvtps_epi32(q), bias));
      }
      a.scales[size_t(m) * (a.K / 32) + b] = p.scale;
    }
    a.zero[m] = 128;
    row_sums(a, m);
  }
}

// ---- int4 x int8 -------------------------------------------------------------------------------

template <int MT>
void q4_tile(const QuantizedActs& a, const PackedQ4& w, int m0, int b, int h, const float* bias, float* y, size_t ldy) {
  const int K = w.K;
  const bool blk = a.scheme == ActQuant::block32;
  const int unit = blk ? 32 : w.group;
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * K + 32 * h;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO + 8 * h;
  const int16_t* wsum = w.wsum.data() + size_t(b) * (K / w.wsum_len) * kBlockO + 8 * h;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO + 8 * h : nullptr;
  const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const uint8_t* ar[MT];
  for (int r = 0; r < MT; ++r) ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
  __m256 facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = _mm256_setzero_ps();
  for (int k0 = 0; k0 < K; k0 += unit) {
    __m256i acc[MT];
    for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_si256();
    for (int k = k0; k < k0 + unit; k += 16) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 8));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k + 8) * 8));
      const __m256i lo0 = _mm256_and_si256(v0, nib), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
      const __m256i lo1 = _mm256_and_si256(v1, nib), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
      for (int r = 0; r < MT; ++r) {
        __m256i s = _mm256_maddubs_epi16(_mm256_set1_epi32(load32(ar[r] + k)), lo0);
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_set1_epi32(load32(ar[r] + k + 4)), hi0));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_set1_epi32(load32(ar[r] + k + 8)), lo1));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_set1_epi32(load32(ar[r] + k + 12)), hi1));
        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(s, ones));
      }
    }
    const int g = k0 / w.group;
    __m256i ws_run = _mm256_setzero_si256();
    for (int t = k0 / w.wsum_len; t < (k0 + unit) / w.wsum_len; ++t)
      ws_run = _mm256_add_epi32(ws_run, _mm256_cvtepi16_epi32(_mm_loadu_si128(
                                            reinterpret_cast<const __m128i*>(wsum + size_t(t) * kBlockO))));
    const __m256 sw = _mm256_loadu_ps(ws + size_t(g) * kBlockO);
    const __m256i z = wz ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wz + size_t(g) * kBlockO)))
                         : _mm256_set1_epi32(8);
    for (int r = 0; r < MT; ++r) {
      const int32_t sa = act_sum(a, m0 + r, k0, unit);
      __m256i dot = _mm256_sub_epi32(acc[r], wz ? _mm256_mullo_epi32(z, _mm256_set1_epi32(sa)) : _mm256_set1_epi32(8 * sa));
      dot = _mm256_sub_epi32(dot, _mm256_mullo_epi32(ws_run, _mm256_set1_epi32(a.zero[m0 + r])));
      if (blk) {
        const __m256 bs = _mm256_mul_ps(_mm256_set1_ps(a.scales[size_t(m0 + r) * (a.K / 32) + k0 / 32]), sw);
        facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), bs, facc[r]);
      } else {
        facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sw, facc[r]);
      }
    }
  }
  const int o0 = b * kBlockO + 8 * h, n = w.O - o0;
  const __m256 vb = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
  for (int r = 0; r < MT; ++r) {
    const __m256 out = blk ? _mm256_add_ps(facc[r], vb) : _mm256_fmadd_ps(facc[r], _mm256_set1_ps(a.scales[m0 + r]), vb);
    store_upto(y + size_t(m0 + r) * ldy + o0, n, out);
  }
}

// Symmetric int4 (z = 8), the common case, runs on signed codes w' = u - 8: one vpmaddubsw pair
// sum is at most 2*255*8 = 4080 in magnitude, so the 16-bit lanes add 8 of them (32 inputs) exactly
// before one vpmaddwd widens them, and dot = sum a*w' - e * sum w' (the weight sums of the packing)
// needs one more vpmaddwd per group instead of the two corrections of the general tile. With many
// rows, an (8-channel half, K) slice is decoded to signed bytes once into a per-thread buffer and
// read by every tile of rows; with few rows the nibbles are decoded in registers.

// 4 inputs x 8 channels of signed codes at input k (k % 4 == 0) of the half at wc (w.codes + 32 h).
inline __m256i q4_signed(const uint8_t* wc, int k) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k / 8) * 64));
  const __m256i n = (k & 4) ? _mm256_srli_epi16(v, 4) : v;
  return _mm256_sub_epi8(_mm256_and_si256(n, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

// Decodes the half (b, h) into dst [K/4][32] signed bytes.
void q4_decode_half(const PackedQ4& w, int b, int h, uint8_t* dst) {
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * w.K + 32 * h;
  for (int k = 0; k < w.K; k += 4)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + size_t(k) * 8), q4_signed(wc, k));
}

inline int log2i(int v) { return 31 - __builtin_clz(unsigned(v)); }

// kSub: inputs summed in 16 bits before widening (32, or 16 for groups of 16); kBlk: block32
// activations (else per token). Everything indexed by r lives in registers.
template <int MT, bool kDecoded, int kSub, bool kBlk>
void q4s_tile(const QuantizedActs& a, const PackedQ4& w, const uint8_t* dec, int m0, int b, int h, const float* bias,
              float* y, size_t ldy) {
  const int K = w.K;
  const int unit = kBlk ? 32 : w.group;
  const int gshift = log2i(w.group), wshift = log2i(w.wsum_len);  // both powers of two
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * K + 32 * h;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO + 8 * h;
  const int16_t* wsum = w.wsum.data() + size_t(b) * (K >> wshift) * kBlockO + 8 * h;
  const float* bscale = kBlk ? a.scales.data() + size_t(m0) * (a.K / 32) : nullptr;
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* a0 = a.codes.data() + size_t(m0) * a.K;
  const size_t lda = size_t(a.K);
  __m256 facc[MT];
#pragma GCC unroll 8
  for (int r = 0; r < MT; ++r) facc[r] = _mm256_setzero_ps();
  for (int k0 = 0; k0 < K; k0 += unit) {
    __m256i acc[MT];
#pragma GCC unroll 8
    for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_si256();
    for (int ks = k0; ks < k0 + unit; ks += kSub) {
      __m256i s[MT];
#pragma GCC unroll 8
      for (int r = 0; r < MT; ++r) s[r] = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int j = 0; j < kSub / 4; ++j) {
        const int k = ks + 4 * j;
        const __m256i wv = kDecoded ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dec + size_t(k) * 8))
                                    : q4_signed(wc, k);
#pragma GCC unroll 8
        for (int r = 0; r < MT; ++r)
          s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(_mm256_set1_epi32(load32(a0 + r * lda + k)), wv));
      }
#pragma GCC unroll 8
      for (int r = 0; r < MT; ++r) acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(s[r], ones));
    }
    const int t0 = k0 >> wshift, t1 = (k0 + unit) >> wshift;
    __m256i ws_run = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wsum + size_t(t0) * kBlockO)));
    for (int t = t0 + 1; t < t1; ++t)
      ws_run = _mm256_add_epi32(ws_run, _mm256_cvtepi16_epi32(_mm_loadu_si128(
                                            reinterpret_cast<const __m128i*>(wsum + size_t(t) * kBlockO))));
    const __m256 sw = _mm256_loadu_ps(ws + size_t(k0 >> gshift) * kBlockO);
#pragma GCC unroll 8
    for (int r = 0; r < MT; ++r) {
      // (-e, 0) int16 pairs: vpmaddwd with the weight sums (|sum w'| <= 2048) gives -e * sum w'
      const __m256i neg_e = _mm256_set1_epi32(int32_t(uint16_t(int16_t(-a.zero[m0 + r]))));
      const __m256i dot = _mm256_add_epi32(acc[r], _mm256_madd_epi16(ws_run, neg_e));
      if (kBlk) {
        const __m256 bs = _mm256_mul_ps(_mm256_set1_ps(bscale[size_t(r) * (a.K / 32) + k0 / 32]), sw);
        facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), bs, facc[r]);
      } else {
        facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sw, facc[r]);
      }
    }
  }
  const int o0 = b * kBlockO + 8 * h, n = w.O - o0;
  const __m256 vb = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int r = 0; r < MT; ++r) {
    const __m256 out = kBlk ? _mm256_add_ps(facc[r], vb) : _mm256_fmadd_ps(facc[r], _mm256_set1_ps(a.scales[m0 + r]), vb);
    store_upto(y + size_t(m0 + r) * ldy + o0, n, out);
  }
}

template <bool kDecoded, int kSub, bool kBlk>
void q4s_rows(const QuantizedActs& a, const PackedQ4& w, const uint8_t* dec, int b, int h, const float* bias, float* y,
              size_t ldy) {
  int m = 0;
  for (; m + 4 <= a.M; m += 4) q4s_tile<4, kDecoded, kSub, kBlk>(a, w, dec, m, b, h, bias, y, ldy);
  switch (a.M - m) {
    case 3: q4s_tile<3, kDecoded, kSub, kBlk>(a, w, dec, m, b, h, bias, y, ldy); break;
    case 2: q4s_tile<2, kDecoded, kSub, kBlk>(a, w, dec, m, b, h, bias, y, ldy); break;
    case 1: q4s_tile<1, kDecoded, kSub, kBlk>(a, w, dec, m, b, h, bias, y, ldy); break;
    default: break;
  }
}

template <bool kDecoded>
void q4s_rows(const QuantizedActs& a, const PackedQ4& w, const uint8_t* dec, int b, int h, const float* bias, float* y,
              size_t ldy) {
  if (a.scheme == ActQuant::block32)
    q4s_rows<kDecoded, 32, true>(a, w, dec, b, h, bias, y, ldy);
  else if (w.group == 16)
    q4s_rows<kDecoded, 16, false>(a, w, dec, b, h, bias, y, ldy);
  else
    q4s_rows<kDecoded, 32, false>(a, w, dec, b, h, bias, y, ldy);
}

// Few rows (decode, the ends of chunks): the whole 16-channel block in one pass, so each activation
// broadcast serves 16 channels and each 64-byte weight line is read once. The nibbles u (0..15)
// are vpmaddubsw's unsigned operand and the activations its signed one (q = a - 128, one xor per
// broadcast): a pair sum is at most 2*15*128 = 3840, so 16-bit lanes add 8 of them (32 inputs)
// exactly. With e the activation zero and z = 8:
//   dot = sum (a - e)(u - 8) = sum q*u - 8 * sum q + (128 - e) * sum (u - 8),
// where sum q = (sum of the codes a) - 128 n and sum (u - 8) are the packing's weight sums.
// Weights stream from memory at batch 1: prefetching this far ahead keeps more lines in flight than
// the hardware prefetcher does (decode of a 135M decoder, one thread: ~20% faster here).
constexpr size_t kPrefetchBytes = 2048;

template <int MT, bool kBlk>
void q4s_block(const QuantizedActs& a, const PackedQ4& w, int m0, int b, const float* bias, float* y, size_t ldy) {
  const int K = w.K;
  const int unit = kBlk ? 32 : w.group;
  const int gshift = log2i(w.group), wshift = log2i(w.wsum_len);
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * K;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO;
  const int16_t* wsum = w.wsum.data() + size_t(b) * (K >> wshift) * kBlockO;
  const __m256i nib = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
  const uint8_t* ar[MT];
  __m256 f0[MT], f1[MT];
  for (int r = 0; r < MT; ++r) {
    ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
    f0[r] = f1[r] = _mm256_setzero_ps();
  }
  for (int k0 = 0; k0 < K; k0 += unit) {
    __m256i acc0[MT], acc1[MT];
    for (int r = 0; r < MT; ++r) acc0[r] = acc1[r] = _mm256_setzero_si256();
    for (int ks = k0; ks < k0 + unit; ks += 32) {
      __m256i s0[MT], s1[MT];
      for (int r = 0; r < MT; ++r) s0[r] = s1[r] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int k = ks; k < ks + 32; k += 8) {
        _mm_prefetch(reinterpret_cast<const char*>(wc + size_t(k) * 8 + kPrefetchBytes), _MM_HINT_T0);
        const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 8));
        const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 8 + 32));
        const __m256i l0 = _mm256_and_si256(v0, nib), h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
        const __m256i l1 = _mm256_and_si256(v1, nib), h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
#pragma GCC unroll 4
        for (int r = 0; r < MT; ++r) {
          const __m256i qlo = _mm256_xor_si256(_mm256_set1_epi32(load32(ar[r] + k)), flip);
          const __m256i qhi = _mm256_xor_si256(_mm256_set1_epi32(load32(ar[r] + k + 4)), flip);
          s0[r] = _mm256_add_epi16(s0[r], _mm256_add_epi16(_mm256_maddubs_epi16(l0, qlo), _mm256_maddubs_epi16(h0, qhi)));
          s1[r] = _mm256_add_epi16(s1[r], _mm256_add_epi16(_mm256_maddubs_epi16(l1, qlo), _mm256_maddubs_epi16(h1, qhi)));
        }
      }
      for (int r = 0; r < MT; ++r) {
        acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(s0[r], ones));
        acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(s1[r], ones));
      }
    }
    __m256i ws0 = _mm256_setzero_si256(), ws1 = _mm256_setzero_si256();
    for (int t = k0 >> wshift; t < (k0 + unit) >> wshift; ++t) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wsum + size_t(t) * kBlockO));
      ws0 = _mm256_add_epi32(ws0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)));
      ws1 = _mm256_add_epi32(ws1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1)));
    }
    const float* sw = ws + size_t(k0 >> gshift) * kBlockO;
    const __m256 sw0 = _mm256_loadu_ps(sw), sw1 = _mm256_loadu_ps(sw + 8);
    for (int r = 0; r < MT; ++r) {
      const int32_t sq = act_sum(a, m0 + r, k0, unit) - 128 * unit;
      const __m256i c = _mm256_set1_epi32(-8 * sq), e = _mm256_set1_epi32(128 - a.zero[m0 + r]);
      const __m256i d0 = _mm256_add_epi32(_mm256_add_epi32(acc0[r], c), _mm256_mullo_epi32(ws0, e));
      const __m256i d1 = _mm256_add_epi32(_mm256_add_epi32(acc1[r], c), _mm256_mullo_epi32(ws1, e));
      if (kBlk) {
        const __m256 bs = _mm256_set1_ps(a.scales[size_t(m0 + r) * (a.K / 32) + k0 / 32]);
        f0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_mul_ps(bs, sw0), f0[r]);
        f1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_mul_ps(bs, sw1), f1[r]);
      } else {
        f0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), sw0, f0[r]);
        f1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), sw1, f1[r]);
      }
    }
  }
  const int o0 = b * kBlockO, n = w.O - o0;
  const __m256 vb0 = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
  const __m256 vb1 = bias ? load_upto(bias + o0 + 8, n - 8) : _mm256_setzero_ps();
  for (int r = 0; r < MT; ++r) {
    float* yr = y + size_t(m0 + r) * ldy + o0;
    if (kBlk) {
      store_upto(yr, n, _mm256_add_ps(f0[r], vb0));
      store_upto(yr + 8, n - 8, _mm256_add_ps(f1[r], vb1));
    } else {
      const __m256 sx = _mm256_set1_ps(a.scales[m0 + r]);
      store_upto(yr, n, _mm256_fmadd_ps(f0[r], sx, vb0));
      store_upto(yr + 8, n - 8, _mm256_fmadd_ps(f1[r], sx, vb1));
    }
  }
}

template <bool kBlk>
void q4s_small(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b) {
    int m = 0;
    for (; m + 2 <= a.M; m += 2) q4s_block<2, kBlk>(a, w, m, b, bias, y, ldy);
    if (m < a.M) q4s_block<1, kBlk>(a, w, m, b, bias, y, ldy);
  }
}

void gemm_q4(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  constexpr int kDecodeRows = 8;  // from this many rows on, decoding a slice once pays off
  if (!w.asym && a.M < kDecodeRows && w.group >= 32) {
    if (a.scheme == ActQuant::block32)
      q4s_small<true>(a, w, bias, y, ldy, b0, b1);
    else
      q4s_small<false>(a, w, bias, y, ldy, b0, b1);
    return;
  }
  thread_local std::vector<uint8_t> dec;
  if (!w.asym && a.M >= kDecodeRows && dec.size() < size_t(w.K) * 8) dec.resize(size_t(w.K) * 8);
  for (int b = b0; b < b1; ++b)
    for (int h = 0; h < 2; ++h) {
      if (b * kBlockO + 8 * h >= w.O) break;
      if (!w.asym) {
        if (a.M >= kDecodeRows) {
          q4_decode_half(w, b, h, dec.data());
          q4s_rows<true>(a, w, dec.data(), b, h, bias, y, ldy);
        } else {
          q4s_rows<false>(a, w, nullptr, b, h, bias, y, ldy);
        }
        continue;
      }
      int m = 0;
      for (; m + 4 <= a.M; m += 4) q4_tile<4>(a, w, m, b, h, bias, y, ldy);
      switch (a.M - m) {
        case 3: q4_tile<3>(a, w, m, b, h, bias, y, ldy); break;
        case 2: q4_tile<2>(a, w, m, b, h, bias, y, ldy); break;
        case 1: q4_tile<1>(a, w, m, b, h, bias, y, ldy); break;
        default: break;
      }
    }
}

// ---- int8 x int8 -------------------------------------------------------------------------------

template <int MT>
void q8_tile(const QuantizedActs& a, const PackedQ8& w, int m0, int b, int h, const float* bias, float* y, size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K + 32 * h;
  const __m256i nib = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
  const uint8_t* ar[MT];
  __m256i acc_hi[MT], acc_lo[MT];
  for (int r = 0; r < MT; ++r) {
    ar[r] = a.codes.data() + size_t(m0 + r) * a.K;
    acc_hi[r] = _mm256_setzero_si256();
    acc_lo[r] = _mm256_setzero_si256();
  }
  for (int k = 0; k < w.K; k += 8) {  // two runs of 4 inputs; each 16-bit sum <= 2 * 2*255*15
    const __m256i v0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 16)), flip);
    const __m256i v1 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k + 4) * 16)), flip);
    const __m256i l0 = _mm256_and_si256(v0, nib), h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nib);
    const __m256i l1 = _mm256_and_si256(v1, nib), h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nib);
    for (int r = 0; r < MT; ++r) {
      const __m256i a0 = _mm256_set1_epi32(load32(ar[r] + k)), a1 = _mm256_set1_epi32(load32(ar[r] + k + 4));
      const __m256i sh = _mm256_add_epi16(_mm256_maddubs_epi16(a0, h0), _mm256_maddubs_epi16(a1, h1));
      const __m256i sl = _mm256_add_epi16(_mm256_maddubs_epi16(a0, l0), _mm256_maddubs_epi16(a1, l1));
      acc_hi[r] = _mm256_add_epi32(acc_hi[r], _mm256_madd_epi16(sh, ones));
      acc_lo[r] = _mm256_add_epi32(acc_lo[r], _mm256_madd_epi16(sl, ones));
    }
  }
  const int o0 = b * kBlockO + 8 * h, n = w.O - o0;
  const __m256 vb = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
  const __m256i wsum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.wsum.data() + o0));
  const __m256 sw = _mm256_loadu_ps(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) {
    // sum a*w = 16*sum a*hi + sum a*lo - 128*sum a; then subtract e * sum w.
    const int32_t sa = act_sum(a, m0 + r, 0, a.K);
    __m256i dot = _mm256_add_epi32(_mm256_slli_epi32(acc_hi[r], 4), acc_lo[r]);
    dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(128 * sa));
    dot = _mm256_sub_epi32(dot, _mm256_mullo_epi32(wsum, _mm256_set1_epi32(a.zero[m0 + r])));
    const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), sw);
    store_upto(y + size_t(m0 + r) * ldy + o0, n, _mm256_fmadd_ps(t, _mm256_set1_ps(a.scales[m0 + r]), vb));
  }
}

// Few rows: the activations as exact int16 values (a - e) and the weights widened to int16, so one
// vpmaddwd multiplies 4 channels x 4 inputs with no correction terms (|pair sum| <= 2*255*128).
// A 64-byte run (16 channels x 4 inputs) is widened once for every row.
template <int MT>
void q8_block(const QuantizedActs& a, const PackedQ8& w, const int16_t* act, int m0, int b, const float* bias,
              float* y, size_t ldy) {
  const int K = w.K;
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * K;
  __m256i acc[MT][4];
  for (int r = 0; r < MT; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm256_setzero_si256();
  for (int k = 0; k < K; k += 4) {
    __m256i av[MT];
    for (int r = 0; r < MT; ++r) {
      int64_t v;
      std::memcpy(&v, act + size_t(m0 + r) * K + k, 8);
      av[r] = _mm256_set1_epi64x(v);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wc + size_t(k) * 16 + 16 * c)));
      for (int r = 0; r < MT; ++r) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(wv, av[r]));
    }
  }
  const int o0 = b * kBlockO, n = w.O - o0;
  for (int h = 0; h < 2; ++h) {
    const __m256 vb = bias ? load_upto(bias + o0 + 8 * h, n - 8 * h) : _mm256_setzero_ps();
    const __m256 sw = _mm256_loadu_ps(w.scales.data() + o0 + 8 * h);
    for (int r = 0; r < MT; ++r) {
      // lanes of acc[r][c]: (channel 4c + i/2, half i%2); hadd pairs them, the permute orders the 128-bit halves
      const __m256i dot = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * h], acc[r][2 * h + 1]), _MM_SHUFFLE(3, 1, 2, 0));
      const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), sw);
      store_upto(y + size_t(m0 + r) * ldy + o0 + 8 * h, n - 8 * h, _mm256_fmadd_ps(t, _mm256_set1_ps(a.scales[m0 + r]), vb));
    }
  }
}

void gemm_q8(const QuantizedActs& a, const PackedQ8& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  if (a.M < 4) {
    thread_local std::vector<int16_t> act;
    act.resize(size_t(a.M) * a.K);
    for (int m = 0; m < a.M; ++m)
      for (int k = 0; k < a.K; ++k) act[size_t(m) * a.K + k] = int16_t(a.codes[size_t(m) * a.K + k] - a.zero[m]);
    for (int b = b0; b < b1; ++b) {
      int m = 0;
      for (; m + 2 <= a.M; m += 2) q8_block<2>(a, w, act.data(), m, b, bias, y, ldy);
      if (m < a.M) q8_block<1>(a, w, act.data(), m, b, bias, y, ldy);
    }
    return;
  }
  for (int b = b0; b < b1; ++b)
    for (int h = 0; h < 2; ++h) {
      if (b * kBlockO + 8 * h >= w.O) break;
      int m = 0;
      for (; m + 4 <= a.M; m += 4) q8_tile<4>(a, w, m, b, h, bias, y, ldy);
      for (; m < a.M; ++m) q8_tile<1>(a, w, m, b, h, bias, y, ldy);
    }
}

// ---- weight-only -------------------------------------------------------------------------------

template <int MT>
void q4f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ4& w, int b, int h, const float* bias,
              float* y, size_t ldy) {
  const uint8_t* wc = w.codes.data() + size_t(b) * 8 * w.K + 32 * h;
  const float* ws = w.scales.data() + size_t(b) * w.G * kBlockO + 8 * h;
  const uint8_t* wz = w.asym ? w.zeros.data() + size_t(b) * w.G * kBlockO + 8 * h : nullptr;
  const __m256i nib = _mm256_set1_epi32(0x0F);
  __m256 facc[MT];
  for (int r = 0; r < MT; ++r) facc[r] = _mm256_setzero_ps();
  for (int g = 0; g * w.group < k_in; ++g) {
    const __m256i z = wz ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wz + size_t(g) * kBlockO)))
                         : _mm256_set1_epi32(8);
    __m256 gacc[MT];
    for (int r = 0; r < MT; ++r) gacc[r] = _mm256_setzero_ps();
    const int kend = std::min(k_in, (g + 1) * w.group);
    for (int k = g * w.group; k < kend; k += 8) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 8));
      const int n = std::min(8, kend - k);
      for (int i = 0; i < n; ++i) {
        const __m256i u = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(8 * (i & 3) + 4 * (i >> 2))), nib);
        const __m256 wf = _mm256_cvtepi32_ps(_mm256_sub_epi32(u, z));
        for (int r = 0; r < MT; ++r)
          gacc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[size_t(m0 + r) * ldx + k + i]), wf, gacc[r]);
      }
    }
    const __m256 sw = _mm256_loadu_ps(ws + size_t(g) * kBlockO);
    for (int r = 0; r < MT; ++r) facc[r] = _mm256_fmadd_ps(gacc[r], sw, facc[r]);
  }
  const int o0 = b * kBlockO + 8 * h, n = w.O - o0;
  const __m256 vb = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
  for (int r = 0; r < MT; ++r) store_upto(y + size_t(m0 + r) * ldy + o0, n, _mm256_add_ps(facc[r], vb));
}

void gemm_q4_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ4& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int h = 0; h < 2; ++h) {
      if (b * kBlockO + 8 * h >= w.O) break;
      int m = 0;
      for (; m + 6 <= M; m += 6) q4f_tile<6>(x, ldx, m, k_in, w, b, h, bias, y, ldy);
      for (; m < M; ++m) q4f_tile<1>(x, ldx, m, k_in, w, b, h, bias, y, ldy);
    }
}

template <int MT>
void q8f_tile(const float* x, size_t ldx, int m0, int k_in, const PackedQ8& w, int b, int h, const float* bias,
              float* y, size_t ldy) {
  const int8_t* wc = w.codes.data() + size_t(b) * 16 * w.K + 32 * h;
  __m256 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_ps();
  for (int k = 0; k < k_in; k += 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + size_t(k) * 16));
    const int n = std::min(4, k_in - k);
    for (int i = 0; i < n; ++i) {
      const __m256 wf = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(v, _mm256_set1_epi32(24 - 8 * i)), 24));
      for (int r = 0; r < MT; ++r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[size_t(m0 + r) * ldx + k + i]), wf, acc[r]);
    }
  }
  const int o0 = b * kBlockO + 8 * h, n = w.O - o0;
  const __m256 vb = bias ? load_upto(bias + o0, n) : _mm256_setzero_ps();
  const __m256 sw = _mm256_loadu_ps(w.scales.data() + o0);
  for (int r = 0; r < MT; ++r) store_upto(y + size_t(m0 + r) * ldy + o0, n, _mm256_fmadd_ps(acc[r], sw, vb));
}

void gemm_q8_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ8& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int b = b0; b < b1; ++b)
    for (int h = 0; h < 2; ++h) {
      if (b * kBlockO + 8 * h >= w.O) break;
      int m = 0;
      for (; m + 6 <= M; m += 6) q8f_tile<6>(x, ldx, m, k_in, w, b, h, bias, y, ldy);
      for (; m < M; ++m) q8f_tile<1>(x, ldx, m, k_in, w, b, h, bias, y, ldy);
    }
}

}  // namespace

const Kernels* avx2_kernels() {
  static const Kernels k{"avx2",          quantize_token,  quantize_block32,  gemm_q4,          gemm_q8,
                         gemm_q4_f32,     gemm_q8_f32,     gemm_f32_avx2,     dot_f32_avx2,     f32_to_f16_avx2,
                         f16_to_f32_avx2, attend_avx2,     silu_mul_avx2,     attend_f16_avx2};
  return &k;
}

}  // namespace edgevlm::cpu::detail
