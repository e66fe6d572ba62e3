// Small float operations of the forward passes (norms, activations), written to follow the
// PyTorch reference's arithmetic (float32 throughout).
#pragma once

#include <cmath>
#include <string>

#include "core/error.h"

namespace edgevlm::cpu {

/// y [n] = w * (x * rsqrt(mean(x^2) + eps))  (llama RMSNorm)
inline void rms_norm(const float* x, const float* w, int n, float eps, float* y) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int i = 0; i < n; ++i) y[i] = w[i] * (x[i] * r);
}

/// y [n] = (x - mean) / sqrt(var + eps) * w + b  (nn.LayerNorm, biased variance)
inline void layer_norm(const float* x, const float* w, const float* b, int n, float eps, float* y) {
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  double var = 0;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  const float r = 1.0f / std::sqrt(static_cast<float>(var) + eps);
  const float m = static_cast<float>(mean);
  for (int i = 0; i < n; ++i) y[i] = (x[i] - m) * r * w[i] + b[i];
}

enum class Act { silu, gelu, gelu_tanh, quick_gelu, relu };

inline Act act_from_name(const std::string& n) {
  if (n == "silu") return Act::silu;
  if (n == "gelu") return Act::gelu;
  if (n == "gelu_pytorch_tanh" || n == "gelu_new") return Act::gelu_tanh;
  if (n == "quick_gelu") return Act::quick_gelu;
  if (n == "relu") return Act::relu;
  fail(ErrorCode::kUnsupported, "activation '" + n + "'");
}

inline float activate(Act a, float x) {
  switch (a) {
    case Act::silu:
      return x / (1.0f + std::exp(-x));
    case Act::gelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Act::gelu_tanh: {
      const float k = 0.79788456080286536f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
    }
    case Act::quick_gelu:
      return x / (1.0f + std::exp(-1.702f * x));
    case Act::relu:
      return x > 0 ? x : 0.0f;
  }
  return x;
}

}  // namespace edgevlm::cpu
