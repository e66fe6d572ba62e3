// Kernel selection by CPU features, weight repacking, and the threaded entry points.
#include "engines/cpu/kernels.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "engines/cpu/kernels_isa.h"
#include "engines/cpu/threadpool.h"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace edgevlm::cpu {

uint16_t f32_to_f16_scalar(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (ax > 0x7F800000u ? (0x200u | ((ax >> 13) & 0x3FFu)) : 0u));
  if (ax >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: infinity
  if (ax < 0x38800000u) {                                   // below the smallest normal half: subnormal
    if (ax < 0x33000000u) return uint16_t(sign);            // < 2^-25: rounds to zero
    const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - int(ax >> 23);                  // 14..24
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = ((ax - 0x38000000u) >> 13);
  const uint32_t rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

float f16_to_f32_scalar(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu, x;
  if (e == 0x1F) {
    x = sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0u);
  } else if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {
      int s = 0;
      while (!(m & 0x400u)) {
        m <<= 1;
        ++s;
      }
      x = sign | (uint32_t(113 - s) << 23) | ((m & 0x3FFu) << 13);
    }
  } else {
    x = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace {

bool has(const char* name) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  std::string n = name;
  if (n == "avx2")
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (n == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#elif defined(__aarch64__) && defined(__linux__)
  if (std::string(name) == "neon") return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
  return std::string(name) == "scalar";
}

const Kernels* table(const std::string& n) {
  if (n == "scalar") return detail::scalar_kernels();
#if defined(__x86_64__) || defined(_M_X64)
  if (n == "avx2") return detail::avx2_kernels();
  if (n == "avx512") return detail::avx512_kernels();
#endif
#if defined(__aarch64__)
  if (n == "neon") return detail::neon_kernels();
#endif
  return nullptr;
}

const Kernels& select() {
  const char* env = std::getenv("EDGEVLM_KERNELS");
  if (env && *env && std::string(env) != "auto") {
    const Kernels* k = kernels_by_name(env);
    if (!k) {
      std::string known;
      for (const char* n : available_kernels()) known += std::string(known.empty() ? "" : ", ") + n;
      fail(ErrorCode::kUnsupported, std::string("EDGEVLM_KERNELS=") + env + " is not available here; available: " + known);
    }
    return *k;
  }
  std::vector<const char*> av = available_kernels();
  return *kernels_by_name(av.back());
}

inline float load_scale(const void* s, bool fp16, size_t i) {
  return fp16 ? f16_to_f32_scalar(static_cast<const uint16_t*>(s)[i]) : static_cast<const float*>(s)[i];
}

void check(bool ok, const std::string& what) {
  if (!ok) fail(ErrorCode::kInvalidArgument, "cpu kernels: " + what);
}

template <class F>
void run(ThreadPool* pool, int n, F&& fn) {
  if (pool && n > 1)
    pool->parallel_for(n, [&](int b, int e) { fn(b, e); });
  else if (n > 0)
    fn(0, n);
}

}  // namespace

const Kernels* kernels_by_name(const char* name) { return name && has(name) ? table(name) : nullptr; }

std::vector<const char*> available_kernels() {
  std::vector<const char*> out;
  for (const char* n : {"scalar", "avx2", "avx512", "neon"})
    if (kernels_by_name(n)) out.push_back(n);
  return out;
}

const Kernels& kernels() {
  static const Kernels& k = select();
  return k;
}

void QuantizedActs::resize(ActQuant s, int m, int k) {
  check(m >= 0 && k > 0 && k % (s == ActQuant::block32 ? 32 : 16) == 0,
        "activation length " + std::to_string(k) + " must be a positive multiple of " +
            (s == ActQuant::block32 ? "32" : "16"));
  scheme = s;
  M = m;
  K = k;
  codes.resize(size_t(m) * k);
  scales.resize(s == ActQuant::block32 ? size_t(m) * (k / 32) : size_t(m));
  zero.resize(size_t(m));
  sums.resize(size_t(m) * (k / 16));
}

PackedQ4 pack_q4(const uint8_t* qdata, int O, int K, int group, const void* scales, bool scales_fp16,
                 const uint8_t* zeros) {
  check(group == 16 || group == 32 || group == 64 || group == 128 || group == 256,
        "int4 group must be 16, 32, 64, 128 or 256, got " + std::to_string(group));
  check(O > 0 && K > 0 && K % group == 0, "int4 weight [" + std::to_string(O) + ", " + std::to_string(K) +
                                              "] needs K a positive multiple of the group " + std::to_string(group));
  PackedQ4 w;
  w.O = O;
  w.K = K;
  w.group = group;
  w.G = K / group;
  w.wsum_len = std::min(group, 32);
  w.asym = zeros != nullptr;
  const int nb = w.blocks();
  w.codes.assign(size_t(nb) * 8 * K, 0);
  w.scales.assign(size_t(nb) * w.G * kBlockO, 0.0f);
  if (w.asym) w.zeros.assign(size_t(nb) * w.G * kBlockO, 0);
  w.wsum.assign(size_t(nb) * (K / w.wsum_len) * kBlockO, 0);
  for (int o = 0; o < O; ++o) {
    const int b = o / kBlockO, l = o % kBlockO;
    const uint8_t* row = qdata + size_t(o) * (K / 2);
    uint8_t* blk = w.codes.data() + size_t(b) * 8 * K;
    for (int k = 0; k < K; ++k) {
      const int u = (k % 2 ? row[k / 2] >> 4 : row[k / 2] & 0x0F);
      const int z = w.asym ? zeros[size_t(o) * w.G + k / group] : 8;
      uint8_t& byte = blk[size_t(k / 8) * 64 + l * 4 + (k % 4)];
      byte |= uint8_t((k % 8) < 4 ? u : u << 4);
      w.wsum[(size_t(b) * (K / w.wsum_len) + k / w.wsum_len) * kBlockO + l] += int16_t(u - z);
    }
    for (int g = 0; g < w.G; ++g) {
      w.scales[(size_t(b) * w.G + g) * kBlockO + l] = load_scale(scales, scales_fp16, size_t(o) * w.G + g);
      if (w.asym) {
        check(zeros[size_t(o) * w.G + g] <= 15, "int4 zero point above 15");
        w.zeros[(size_t(b) * w.G + g) * kBlockO + l] = zeros[size_t(o) * w.G + g];
      }
    }
  }
  // Padded channels (o >= O): codes 0 with zero 0 (asym) or codes 8 (sym) give exact zero dots.
  if (!w.asym) {
    for (int o = O; o < nb * kBlockO; ++o) {
      uint8_t* blk = w.codes.data() + size_t(o / kBlockO) * 8 * K;
      for (int k = 0; k < K; k += 8)
        for (int i = 0; i < 4; ++i) blk[size_t(k / 8) * 64 + (o % kBlockO) * 4 + i] = 0x88;
    }
  }
  return w;
}

PackedQ8 pack_q8(const int8_t* qdata, int O, int K, const void* scales, bool scales_fp16) {
  check(O > 0 && K > 0, "int8 weight needs positive sizes");
  PackedQ8 w;
  w.O = O;
  w.K = (K + 15) / 16 * 16;
  const int nb = w.blocks();
  w.codes.assign(size_t(nb) * 16 * w.K, 0);
  w.scales.assign(size_t(nb) * kBlockO, 0.0f);
  w.wsum.assign(size_t(nb) * kBlockO, 0);
  for (int o = 0; o < O; ++o) {
    int8_t* blk = w.codes.data() + size_t(o / kBlockO) * 16 * w.K;
    for (int k = 0; k < K; ++k) {
      const int8_t q = qdata[size_t(o) * K + k];
      blk[size_t(k / 4) * 64 + (o % kBlockO) * 4 + (k % 4)] = q;
      w.wsum[o] += q;
    }
    w.scales[o] = load_scale(scales, scales_fp16, size_t(o));
  }
  return w;
}

void quantize_acts(const Kernels& k, ThreadPool* pool, ActQuant s, const float* x, size_t ldx, int M, int k_in,
                   int k_pad, QuantizedActs& acts) {
  check(k_in > 0 && k_in <= k_pad, "activation length " + std::to_string(k_in) + " exceeds the padded length " +
                                       std::to_string(k_pad));
  acts.resize(s, M, k_pad);
  auto fn = s == ActQuant::token ? k.quantize_token : k.quantize_block32;
  run(pool, M, [&](int m0, int m1) { fn(x, ldx, k_in, m0, m1, acts); });
}

void linear_q4(const Kernels& k, ThreadPool* pool, const QuantizedActs& a, const PackedQ4& w, const float* bias,
               float* y, size_t ldy) {
  check(a.K == w.K, "activations have K=" + std::to_string(a.K) + ", int4 weight has K=" + std::to_string(w.K));
  check(a.scheme != ActQuant::block32 || w.group % 32 == 0, "block32 activations need a group multiple of 32");
  run(pool, w.blocks(), [&](int b0, int b1) { k.gemm_q4(a, w, bias, y, ldy, b0, b1); });
}

void linear_q8(const Kernels& k, ThreadPool* pool, const QuantizedActs& a, const PackedQ8& w, const float* bias,
               float* y, size_t ldy) {
  check(a.K == w.K, "activations have K=" + std::to_string(a.K) + ", int8 weight has K=" + std::to_string(w.K));
  check(a.scheme == ActQuant::token, "int8 weights take per-token activations");
  run(pool, w.blocks(), [&](int b0, int b1) { k.gemm_q8(a, w, bias, y, ldy, b0, b1); });
}

void linear_q4_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int k_in,
                   const PackedQ4& w, const float* bias, float* y, size_t ldy) {
  check(k_in > 0 && k_in <= w.K, "input length exceeds the int4 weight's K");
  run(pool, w.blocks(), [&](int b0, int b1) { k.gemm_q4_f32(x, ldx, M, k_in, w, bias, y, ldy, b0, b1); });
}

void linear_q8_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int k_in,
                   const PackedQ8& w, const float* bias, float* y, size_t ldy) {
  check(k_in > 0 && k_in <= w.K, "input length exceeds the int8 weight's K");
  run(pool, w.blocks(), [&](int b0, int b1) { k.gemm_q8_f32(x, ldx, M, k_in, w, bias, y, ldy, b0, b1); });
}

void linear_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int K, const float* w,
                size_t ldw, int O, const float* bias, float* y, size_t ldy) {
  const int nb = (O + kBlockO - 1) / kBlockO;
  run(pool, nb, [&](int b0, int b1) {
    k.gemm_f32(x, ldx, M, K, w, ldw, bias, y, ldy, b0 * kBlockO, std::min(O, b1 * kBlockO));
  });
}

}  // namespace edgevlm::cpu
