// The reference kernels: plain C++, one output at a time, in exactly the order the SIMD sets use
// (explicit std::fma wherever they fuse, so no compiler contraction can make them differ).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engines/cpu/kernels_isa.h"

namespace edgevlm::cpu::detail {
namespace {

inline int q4_code(const PackedQ4& w, int o, int k) {
  const uint8_t* blk = w.codes.data() + size_t(o / kBlockO) * 8 * w.K;
  uint8_t byte = blk[size_t(k / 8) * 64 + (o % kBlockO) * 4 + (k % 4)];
  return (k % 8) < 4 ? (byte & 0x0F) : (byte >> 4);
}
inline int q4_zero(const PackedQ4& w, int o, int g) {
  return w.asym ? w.zeros[(size_t(o / kBlockO) * w.G + g) * kBlockO + o % kBlockO] : 8;
}
inline float q4_scale(const PackedQ4& w, int o, int g) {
  return w.scales[(size_t(o / kBlockO) * w.G + g) * kBlockO + o % kBlockO];
}
inline int q8_code(const PackedQ8& w, int o, int k) {
  const int8_t* blk = w.codes.data() + size_t(o / kBlockO) * 16 * w.K;
  return blk[size_t(k / 4) * 64 + (o % kBlockO) * 4 + (k % 4)];
}

void quantize_token(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    float lo = 0.0f, hi = 0.0f;
    for (int k = 0; k < k_in; ++k) {
      lo = std::min(lo, r[k]);
      hi = std::max(hi, r[k]);
    }
    TokenParams p = token_params(lo, hi);
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    for (int k = 0; k < k_in; ++k) {
      float q = std::min(std::max(std::nearbyint(r[k] / p.scale) + p.zp, -128.0f), 127.0f);
      c[k] = uint8_t(int(q) + 128);
    }
    std::memset(c + k_in, int(p.zp) + 128, size_t(a.K - k_in));
    a.scales[m] = p.scale;
    a.zero[m] = int(p.zp) + 128;
    row_sums(a, m);
  }
}

void quantize_block32(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& a) {
  for (int m = m0; m < m1; ++m) {
    const float* r = x + size_t(m) * ldx;
    uint8_t* c = a.codes.data() + size_t(m) * a.K;
    for (int b = 0; b < a.K / 32; ++b) {
      int n = std::max(0, std::min(32, k_in - b * 32));
      float amax = 0.0f;
      for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(r[b * 32 + i]));
      BlockParams p = block_params(amax);
      for (int i = 0; i < 32; ++i) {
        float v = i < n ? r[b * 32 + i] : 0.0f;
        float q = std::min(std::max(std::nearbyint(v * p.inv), -127.0f), 127.0f);
        c[b * 32 + i] = uint8_t(int(q) + 128);
      }
      a.scales[size_t(m) * (a.K / 32) + b] = p.scale;
    }
    a.zero[m] = 128;
    row_sums(a, m);
  }
}

void gemm_q4(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  const bool blk = a.scheme == ActQuant::block32;
  const int unit = blk ? 32 : w.group;
  for (int o = b0 * kBlockO; o < std::min(w.O, b1 * kBlockO); ++o) {
    for (int m = 0; m < a.M; ++m) {
      const uint8_t* ac = a.codes.data() + size_t(m) * a.K;
      const int e = a.zero[m];
      float acc = 0.0f;
      for (int k0 = 0; k0 < w.K; k0 += unit) {
        const int g = k0 / w.group, z = q4_zero(w, o, g);
        int32_t dot = 0;
        for (int k = k0; k < k0 + unit; ++k) dot += (int32_t(ac[k]) - e) * (q4_code(w, o, k) - z);
        float sw = q4_scale(w, o, g);
        if (blk) {
          float bs = a.scales[size_t(m) * (a.K / 32) + k0 / 32] * sw;
          acc = std::fma(float(dot), bs, acc);
        } else {
          acc = std::fma(float(dot), sw, acc);
        }
      }
      float b = bias ? bias[o] : 0.0f;
      y[size_t(m) * ldy + o] = blk ? acc + b : std::fma(acc, a.scales[m], b);
    }
  }
}

void gemm_q8(const QuantizedActs& a, const PackedQ8& w, const float* bias, float* y, size_t ldy, int b0, int b1) {
  for (int o = b0 * kBlockO; o < std::min(w.O, b1 * kBlockO); ++o) {
    for (int m = 0; m < a.M; ++m) {
      const uint8_t* ac = a.codes.data() + size_t(m) * a.K;
      const int e = a.zero[m];
      int32_t dot = 0;
      for (int k = 0; k < w.K; ++k) dot += (int32_t(ac[k]) - e) * q8_code(w, o, k);
      float t = float(dot) * w.scales[o];
      y[size_t(m) * ldy + o] = std::fma(t, a.scales[m], bias ? bias[o] : 0.0f);
    }
  }
}

void gemm_q4_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ4& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int o = b0 * kBlockO; o < std::min(w.O, b1 * kBlockO); ++o) {
    for (int m = 0; m < M; ++m) {
      const float* r = x + size_t(m) * ldx;
      float acc = 0.0f;
      for (int g = 0; g * w.group < k_in; ++g) {
        const int z = q4_zero(w, o, g);
        float ga = 0.0f;
        for (int k = g * w.group; k < std::min(k_in, (g + 1) * w.group); ++k)
          ga = std::fma(r[k], float(q4_code(w, o, k) - z), ga);
        acc = std::fma(ga, q4_scale(w, o, g), acc);
      }
      y[size_t(m) * ldy + o] = acc + (bias ? bias[o] : 0.0f);
    }
  }
}

void gemm_q8_f32(const float* x, size_t ldx, int M, int k_in, const PackedQ8& w, const float* bias, float* y,
                 size_t ldy, int b0, int b1) {
  for (int o = b0 * kBlockO; o < std::min(w.O, b1 * kBlockO); ++o) {
    for (int m = 0; m < M; ++m) {
      const float* r = x + size_t(m) * ldx;
      float acc = 0.0f;
      for (int k = 0; k < k_in; ++k) acc = std::fma(r[k], float(q8_code(w, o, k)), acc);
      y[size_t(m) * ldy + o] = std::fma(acc, w.scales[o], bias ? bias[o] : 0.0f);
    }
  }
}

float dot_f32(const float* a, const float* b, int n) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc = std::fma(a[i], b[i], acc);
  return acc;
}

void gemm_f32(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias, float* y,
              size_t ldy, int o0, int o1) {
  for (int m = 0; m < M; ++m)
    for (int o = o0; o < o1; ++o)
      y[size_t(m) * ldy + o] = dot_f32(x + size_t(m) * ldx, w + size_t(o) * ldw, K) + (bias ? bias[o] : 0.0f);
}

void f32_to_f16(const float* x, uint16_t* h, size_t n) {
  for (size_t i = 0; i < n; ++i) h[i] = f32_to_f16_scalar(x[i]);
}
void f16_to_f32(const uint16_t* h, float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = f16_to_f32_scalar(h[i]);
}

}  // namespace

void attend_ref(const float* q, const float* k, const float* v, size_t ldkv, int n, int hd, int G, float scale,
                float* scores, float* out) {
  for (int g = 0; g < G; ++g, scores += n) {
    const float* qg = q + size_t(g) * hd;
    float mx = -INFINITY;
    for (int j = 0; j < n; ++j) {
      scores[j] = dot_f32(qg, k + size_t(j) * ldkv, hd) * scale;
      mx = std::max(mx, scores[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      sum += scores[j];
    }
    const float inv = 1.0f / sum;
    float* o = out + size_t(g) * hd;
    std::fill(o, o + hd, 0.0f);
    for (int j = 0; j < n; ++j) {
      const float p = scores[j] * inv;
      const float* vj = v + size_t(j) * ldkv;
      for (int d = 0; d < hd; ++d) o[d] += p * vj[d];
    }
  }
}

void silu_mul_ref(const float* g, const float* u, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

const Kernels* scalar_kernels() {
  static const Kernels k{"scalar",    quantize_token, quantize_block32, gemm_q4,    gemm_q8,    gemm_q4_f32,
                         gemm_q8_f32, gemm_f32,       dot_f32,          f32_to_f16, f16_to_f32,
                         attend_ref,  silu_mul_ref,  nullptr};
  return &k;
}

}  // namespace edgevlm::cpu::detail
