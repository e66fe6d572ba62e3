// Internal to the CPU kernels: the per-ISA tables and the scalar pieces every set shares, so that
// row parameters (scale, zero point) are computed by the same code everywhere.
#pragma once

#include <algorithm>
#include <cmath>

#include "engines/cpu/kernels.h"

namespace edgevlm::cpu::detail {

const Kernels* scalar_kernels();
#if defined(__x86_64__) || defined(_M_X64)
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();
#endif
#if defined(__aarch64__)
const Kernels* neon_kernels();
#endif

// The float helpers' reference versions (kernels_scalar.cpp), which sets without their own use.
void attend_ref(const float* q, const float* k, const float* v, size_t ldkv, int n, int hd, int G, float scale,
                float* scores, float* out);
void silu_mul_ref(const float* g, const float* u, float* y, size_t n);
#if defined(__x86_64__) || defined(_M_X64)
// The AVX2 float kernels (kernels_avx2_float.cpp): the AVX2 set's, and the AVX-512 set shares the
// attention and SwiGLU ones.
float dot_f32_avx2(const float* a, const float* b, int n);
void gemm_f32_avx2(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias, float* y,
                   size_t ldy, int o0, int o1);
void f32_to_f16_avx2(const float* x, uint16_t* h, size_t n);
void f16_to_f32_avx2(const uint16_t* h, float* x, size_t n);
void attend_f16_avx2(const float* q, const uint16_t* k, const uint16_t* v, size_t ldkv, int n, int hd, int G,
                     float scale, float* scores, float* out);
void attend_avx2(const float* q, const float* k, const float* v, size_t ldkv, int n, int hd, int G, float scale,
                 float* scores, float* out);
void silu_mul_avx2(const float* g, const float* u, float* y, size_t n);
#endif

/// Per-token parameters from the row range [lo, hi] (modules.quantize_per_token):
/// scale = max((max(hi,0) - min(lo,0)) / 255, 1e-12), zp = clamp(-128 - round(lo / scale), -128, 127).
struct TokenParams {
  float scale;
  float zp;
};
inline TokenParams token_params(float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float s = std::max((hi - lo) / 255.0f, 1e-12f);
  float zp = std::min(std::max(-128.0f - std::nearbyint(lo / s), -128.0f), 127.0f);
  return {s, zp};
}

/// Block parameters from the block's max |x| (modules.quantize_blocks): scale = amax / 127,
/// inverse = 1 / max(scale, 1e-12) when scale > 0, else 0.
struct BlockParams {
  float scale;
  float inv;
};
inline BlockParams block_params(float amax) {
  float s = amax / 127.0f;
  return {s, s > 0.0f ? 1.0f / std::max(s, 1e-12f) : 0.0f};
}

/// Fills acts.sums for row m (sum of the codes over each 16 inputs).
inline void row_sums(QuantizedActs& a, int m) {
  const uint8_t* c = a.codes.data() + size_t(m) * a.K;
  int32_t* s = a.sums.data() + size_t(m) * (a.K / 16);
  for (int b = 0; b < a.K / 16; ++b) {
    int32_t t = 0;
    for (int i = 0; i < 16; ++i) t += c[b * 16 + i];
    s[b] = t;
  }
}

/// Sum of acts.sums of row m over inputs [k0, k0 + n) (k0, n multiples of 16).
inline int32_t act_sum(const QuantizedActs& a, int m, int k0, int n) {
  const int32_t* s = a.sums.data() + size_t(m) * (a.K / 16) + k0 / 16;
  int32_t t = 0;
  for (int i = 0; i < n / 16; ++i) t += s[i];
  return t;
}

}  // namespace edgevlm::cpu::detail
