// The AVX2 + FMA + F16C float kernels: dot products and small float GEMMs, fp16 <-> fp32, attention
// (over float32 or, read in place, fp16 keys and values) and the SwiGLU gate. The AVX-512 set uses
// the attention and SwiGLU kernels of this file as they are.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engines/cpu/kernels_avx2_common.h"
#include "engines/cpu/kernels_isa.h"

namespace edgevlm::cpu::detail {

// ---- float -------------------------------------------------------------------------------------

float dot_f32_avx2(const float* a, const float* b, int n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i < n; i += 8) acc0 = _mm256_fmadd_ps(load_upto(a + i, n - i), load_upto(b + i, n - i), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

void gemm_f32_avx2(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias, float* y,
                   size_t ldy, int o0, int o1) {
  for (int o = o0; o < o1; ++o)
    for (int m = 0; m < M; ++m)
      y[size_t(m) * ldy + o] = dot_f32_avx2(x + size_t(m) * ldx, w + size_t(o) * ldw, K) + (bias ? bias[o] : 0.0f);
}

void f32_to_f16_avx2(const float* x, uint16_t* h, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) h[i] = f32_to_f16_scalar(x[i]);
}

void f16_to_f32_avx2(const uint16_t* h, float* x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) x[i] = f16_to_f32_scalar(h[i]);
}

// ---- attention, SwiGLU -------------------------------------------------------------------------

namespace {

// e^x (Cephes expf: x = n ln2 + r, a degree-6 polynomial for e^r, 2^n from the exponent bits);
// inputs clamped to [-87.3, 88.4], so results stay finite and normal; ~1 ulp.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // fx in [-126, 128): 2^fx as exponent bits (fx = 128 only for x at the upper clamp: use 2^127 * 2)
  const __m256i n = _mm256_cvtps_epi32(fx);
  const __m256i lo = _mm256_min_epi32(n, _mm256_set1_epi32(127));
  const __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(lo, _mm256_set1_epi32(127)), 23));
  const __m256 extra = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(n, lo), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(e, pow2), extra);
}

// Keys and values are read as float32 or IEEE half (the fp16 KV cache read in place: the
// conversion is exact, so both give the same bits).
inline __m256 load_kv(const float* p, int n) { return load_upto(p, n); }
inline __m256 load_kv(const uint16_t* p, int n) {
  if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if (n <= 0) return _mm256_setzero_ps();
  alignas(16) uint16_t tmp[8] = {};
  std::memcpy(tmp, p, sizeof(uint16_t) * n);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(tmp)));
}

// The dots of NQ query rows (q, q + hd) with 4 key rows: res[i] lane j = q_i . k_j.
template <int NQ, class T>
inline void dots_4keys(const float* q, int hd, const T* k0, size_t ld, __m128* res) {
  __m256 a[NQ][4];
  for (int i = 0; i < NQ; ++i)
    for (int j = 0; j < 4; ++j) a[i][j] = _mm256_setzero_ps();
  for (int d = 0; d < hd; d += 8) {
    const int n = hd - d;
    __m256 kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = load_kv(k0 + j * ld + d, n);
    for (int i = 0; i < NQ; ++i) {
      const __m256 qv = load_upto(q + size_t(i) * hd + d, n);
      for (int j = 0; j < 4; ++j) a[i][j] = _mm256_fmadd_ps(qv, kv[j], a[i][j]);
    }
  }
  for (int i = 0; i < NQ; ++i) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[i][0], a[i][1]), _mm256_hadd_ps(a[i][2], a[i][3]));
    res[i] = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  }
}

// One key row at a time (the tail): dot_f32's order on float keys.
inline float dot_kv(const float* q, const float* k, int hd) { return dot_f32_avx2(q, k, hd); }
inline float dot_kv(const float* q, const uint16_t* k, int hd) {
  float row_local[256];
  std::vector<float> row_store;
  float* row = hd <= 256 ? row_local : (row_store.resize(size_t(hd)), row_store.data());
  for (int d = 0; d < hd; d += 8) store_upto(row + d, hd - d, load_kv(k + d, hd - d));
  return dot_f32_avx2(q, row, hd);
}

// scores [NQ, n] = scale * q [NQ, hd] . k[j]
template <int NQ, class T>
void scores_rows(const float* q, const T* k, size_t ldkv, int n, int hd, float scale, float* scores) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    __m128 r[NQ];
    dots_4keys<NQ>(q, hd, k + size_t(j) * ldkv, ldkv, r);
    for (int i = 0; i < NQ; ++i) _mm_storeu_ps(scores + size_t(i) * n + j, _mm_mul_ps(r[i], _mm_set1_ps(scale)));
  }
  for (; j < n; ++j)
    for (int i = 0; i < NQ; ++i) scores[size_t(i) * n + j] = dot_kv(q + size_t(i) * hd, k + size_t(j) * ldkv, hd) * scale;
}

// out [NQ, hd] (dims [d0, d0 + nd), nd <= 32) = sum_j p[i][j] v[j] * inv[i]
template <int NQ, class T>
void weighted_values(const float* p, int n, const T* v, size_t ldkv, int hd, int d0, int nd, const float* inv,
                     float* out) {
  __m256 acc[NQ][4];
  for (int i = 0; i < NQ; ++i)
    for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_setzero_ps();
  const int nc = (nd + 7) / 8;
  for (int j = 0; j < n; ++j) {
    const T* vj = v + size_t(j) * ldkv + d0;
    __m256 vv[4];
    for (int c = 0; c < 4; ++c) vv[c] = c < nc ? load_kv(vj + 8 * c, nd - 8 * c) : _mm256_setzero_ps();
    for (int i = 0; i < NQ; ++i) {
      const __m256 pj = _mm256_set1_ps(p[size_t(i) * n + j]);
      for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_fmadd_ps(pj, vv[c], acc[i][c]);
    }
  }
  for (int i = 0; i < NQ; ++i)
    for (int c = 0; c < nc; ++c)
      store_upto(out + size_t(i) * hd + d0 + 8 * c, nd - 8 * c, _mm256_mul_ps(acc[i][c], _mm256_set1_ps(inv[i])));
}

template <class T>
void attend_t(const float* q, const T* k, const T* v, size_t ldkv, int n, int hd, int G, float scale, float* scores,
              float* out) {
  int g = 0;
  for (; g + 2 <= G; g += 2) scores_rows<2>(q + size_t(g) * hd, k, ldkv, n, hd, scale, scores + size_t(g) * n);
  if (g < G) scores_rows<1>(q + size_t(g) * hd, k, ldkv, n, hd, scale, scores + size_t(g) * n);
  std::vector<float> inv_store;
  float inv_local[16];
  float* inv = G <= 16 ? inv_local : (inv_store.resize(G), inv_store.data());
  for (g = 0; g < G; ++g) {
    float* sc = scores + size_t(g) * n;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sc + j));
    float mx = hmax(vmax);
    for (; j < n; ++j) mx = std::max(mx, sc[j]);
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j < n; j += 8) {
      const int r = n - j;
      const __m256 e = exp_ps(_mm256_sub_ps(load_upto(sc + j, r), vmx));
      const __m256 em = r >= 8 ? e : _mm256_and_ps(e, _mm256_castsi256_ps(lanes_upto(r)));
      vsum = _mm256_add_ps(vsum, em);
      store_upto(sc + j, r, em);
    }
    inv[g] = 1.0f / hsum(vsum);
  }
  for (int d0 = 0; d0 < hd; d0 += 32) {
    const int nd = std::min(32, hd - d0);
    for (g = 0; g + 3 <= G; g += 3)
      weighted_values<3>(scores + size_t(g) * n, n, v, ldkv, hd, d0, nd, inv + g, out + size_t(g) * hd);
    for (; g < G; ++g) weighted_values<1>(scores + size_t(g) * n, n, v, ldkv, hd, d0, nd, inv + g, out + size_t(g) * hd);
  }
}

}  // namespace

void attend_avx2(const float* q, const float* k, const float* v, size_t ldkv, int n, int hd, int G, float scale,
                 float* scores, float* out) {
  attend_t(q, k, v, ldkv, n, hd, G, scale, scores, out);
}

void attend_f16_avx2(const float* q, const uint16_t* k, const uint16_t* v, size_t ldkv, int n, int hd, int G,
                     float scale, float* scores, float* out) {
  attend_t(q, k, v, ldkv, n, hd, G, scale, scores, out);
}

void silu_mul_avx2(const float* g, const float* u, float* y, size_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
  }
  if (i < n) silu_mul_ref(g + i, u + i, y + i, n - i);
}

}  // namespace edgevlm::cpu::detail
