#include "engines/cpu/kv_cache.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace edgevlm::cpu {

KvDtype kv_dtype_from_name(const std::string& n) {
  if (n == "f16" || n == "float16" || n == "fp16") return KvDtype::f16;
  if (n == "f32" || n == "float32" || n == "float" || n == "fp32") return KvDtype::f32;
  if (n == "int8") return KvDtype::int8;
  fail(ErrorCode::kInvalidArgument, "KV cache dtype '" + n + "' unknown (f16, f32, int8)");
}

void KvCache::init(KvDtype dtype, int layers, int kv_heads, int max_context, int head_dim) {
  dtype_ = dtype, layers_ = layers, kv_heads_ = kv_heads, ctx_ = max_context, dim_ = head_dim;
  const size_t n = 2ull * layers * kv_heads * max_context * head_dim;
  f32_.clear(), f16_.clear(), i8_.clear(), scale_.clear();
  if (dtype == KvDtype::f32) f32_.assign(n, 0.f);
  if (dtype == KvDtype::f16) f16_.assign(n, 0);
  if (dtype == KvDtype::int8) {
    i8_.assign(n, 0);
    scale_.assign(n / head_dim, 0.f);
  }
}

void KvCache::clear() {
  std::fill(f32_.begin(), f32_.end(), 0.f);
  std::fill(f16_.begin(), f16_.end(), 0);
  std::fill(i8_.begin(), i8_.end(), 0);
  std::fill(scale_.begin(), scale_.end(), 0.f);
}

void KvCache::write(int which, int layer, int head, int pos, const float* x, const Kernels& k) {
  const size_t i = index(which, layer, head, pos);
  switch (dtype_) {
    case KvDtype::f32:
      std::copy(x, x + dim_, f32_.data() + i * dim_);
      return;
    case KvDtype::f16:
      k.f32_to_f16(x, f16_.data() + i * dim_, dim_);
      return;
    case KvDtype::int8: {
      float amax = 0.f;
      for (int d = 0; d < dim_; ++d) amax = std::max(amax, std::fabs(x[d]));
      const float s = amax / 127.f;
      const float div = std::max(s, 1e-12f);
      int8_t* q = i8_.data() + i * dim_;
      for (int d = 0; d < dim_; ++d) q[d] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, std::nearbyint(x[d] / div))));
      scale_[i] = s;
      return;
    }
  }
}

const float* KvCache::read(int which, int layer, int head, int pos, float* tmp, const Kernels& k) const {
  const size_t i = index(which, layer, head, pos);
  switch (dtype_) {
    case KvDtype::f32:
      return f32_.data() + i * dim_;
    case KvDtype::f16:
      k.f16_to_f32(f16_.data() + i * dim_, tmp, dim_);
      return tmp;
    case KvDtype::int8: {
      const int8_t* q = i8_.data() + i * dim_;
      const float s = scale_[i];
      for (int d = 0; d < dim_; ++d) tmp[d] = static_cast<float>(q[d]) * s;
      return tmp;
    }
  }
  return tmp;
}

const float* KvCache::read_rows(int which, int layer, int head, int n, float* tmp, const Kernels& k) const {
  const size_t i = index(which, layer, head, 0);
  switch (dtype_) {
    case KvDtype::f32:
      return f32_.data() + i * dim_;
    case KvDtype::f16:
      k.f16_to_f32(f16_.data() + i * dim_, tmp, static_cast<size_t>(n) * dim_);
      return tmp;
    case KvDtype::int8:
      for (int p = 0; p < n; ++p) read(which, layer, head, p, tmp + static_cast<size_t>(p) * dim_, k);
      return tmp;
  }
  return tmp;
}

}  // namespace edgevlm::cpu
