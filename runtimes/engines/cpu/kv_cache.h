// The static KV cache of the CPU engine: keys and values of every decoder layer at absolute
// positions 0..max_context-1, stored as fp16 (default), float32, or int8 with one float scale per
// (position, head) vector as edgevlm/models/cache.py Int8KVCache (s = max|x| / 127, read as q * s).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engines/cpu/kernels.h"

namespace edgevlm::cpu {

enum class KvDtype { f16, f32, int8 };
KvDtype kv_dtype_from_name(const std::string& name);  // "f16"/"float16", "f32"/"float32"/"float", "int8"

class KvCache {
 public:
  void init(KvDtype dtype, int layers, int kv_heads, int max_context, int head_dim);
  void clear();
  KvDtype dtype() const { return dtype_; }
  int max_context() const { return ctx_; }

  /// Stores x [head_dim] as the key (which = 0) or value (1) of (layer, head, pos).
  void write(int which, int layer, int head, int pos, const float* x, const Kernels& k);
  /// The stored vector as float: a pointer into the cache (f32) or `tmp` [head_dim] filled.
  const float* read(int which, int layer, int head, int pos, float* tmp, const Kernels& k) const;
  /// Positions [0, n) of (layer, head) as float rows [n, head_dim]: a pointer into the cache (f32)
  /// or `tmp` [n * head_dim] filled.
  const float* read_rows(int which, int layer, int head, int n, float* tmp, const Kernels& k) const;
  /// The fp16 rows of (layer, head) in place ([max_context, head_dim]); null unless the cache is fp16.
  const uint16_t* f16_rows(int which, int layer, int head) const {
    return dtype_ == KvDtype::f16 ? f16_.data() + index(which, layer, head, 0) * dim_ : nullptr;
  }

 private:
  size_t index(int which, int layer, int head, int pos) const {
    return ((static_cast<size_t>(which) * layers_ + layer) * kv_heads_ + head) * ctx_ + pos;
  }
  KvDtype dtype_ = KvDtype::f16;
  int layers_ = 0, kv_heads_ = 0, ctx_ = 0, dim_ = 0;
  std::vector<float> f32_;      // [2][layers][kv_heads][ctx][dim]
  std::vector<uint16_t> f16_;   // same layout
  std::vector<int8_t> i8_;      // same layout
  std::vector<float> scale_;    // [2][layers][kv_heads][ctx] (int8)
};

}  // namespace edgevlm::cpu
