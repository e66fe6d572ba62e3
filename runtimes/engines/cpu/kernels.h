// Compute kernels of the CPU engine: quantized linear layers (int4 group-wise / int8 per-channel
// weights x int8 dynamic activations, int32 accumulation), their weight-only float variants, small
// float GEMMs and fp16 <-> fp32 conversion.
//
// One table of function pointers (`Kernels`) per instruction set: scalar (the reference), AVX2,
// AVX-512 VNNI, NEON dotprod. `kernels()` picks the best one this CPU runs (EDGEVLM_KERNELS=
// scalar|avx2|avx512|neon overrides it, for tests and benchmarks). Every set computes the integer
// group dot products exactly and combines them in float in the same order with the same fused
// multiply-adds, so all sets give bit-identical results on the integer paths and the weight-only
// paths; only `gemm_f32` / `dot_f32` sum in an ISA-specific order (relative error ~1e-6).
//
// What the integer paths compute (quant/modules.py, QuantLinear):
//   a=token   : y[m,o] = fma(sum_g fma-chain(float(dot_g[m,o]) * s_w[o,g]), s_x[m], bias[o])
//   a=block32 : y[m,o] = sum_b fma-chain(float(dot_b[m,o]) * (s_x[m,b] * s_w[o,g(b)])) + bias[o]
//   int8 (a=token): y[m,o] = fma(float(dot[m,o]) * s_w[o], s_x[m], bias[o])
// where dot is the exact integer product of activation codes (q - zp) and weight codes (u - z).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace edgevlm::cpu {

class ThreadPool;

/// Output channels are packed in blocks of this many (one AVX-512 register of int32 / float).
constexpr int kBlockO = 16;

/// int4 group-wise weights repacked for the kernels (any instruction set reads the same layout).
///
/// codes: for each block of 16 output channels and each run of 8 inputs k..k+7, 64 bytes: byte
/// `4*l + i` (lane l = channel within the block, i in 0..3) holds the nibble of input k+i in its
/// low half and of input k+i+4 in its high half. Nibbles are the stored unsigned codes u (0..15).
struct PackedQ4 {
  int O = 0;          // output channels
  int K = 0;          // padded input length (multiple of group)
  int group = 32;     // 16, 32, 64, 128 or 256
  int G = 0;          // groups per row, K / group
  int wsum_len = 32;  // inputs per wsum entry: min(group, 32)
  bool asym = false;  // explicit zero points (else the implicit 8 of symmetric codes)
  int blocks() const { return (O + kBlockO - 1) / kBlockO; }
  std::vector<uint8_t> codes;   // [blocks][K/8][16][4]
  std::vector<float> scales;    // [blocks][G][16]   (fp16 scales converted exactly)
  std::vector<uint8_t> zeros;   // [blocks][G][16]   asymmetric only: z; symmetric: empty (z = 8)
  std::vector<int16_t> wsum;    // [blocks][K/wsum_len][16]  sum of (u - z) over the run
};

/// int8 per-channel weights repacked: for each block of 16 channels and each run of 4 inputs, 64
/// bytes: byte `4*l + i` is the signed code of input k+i of channel l. K is padded to 16.
struct PackedQ8 {
  int O = 0;
  int K = 0;  // padded input length (multiple of 16)
  int blocks() const { return (O + kBlockO - 1) / kBlockO; }
  std::vector<int8_t> codes;    // [blocks][K/4][16][4]
  std::vector<float> scales;    // [blocks*16]
  std::vector<int32_t> wsum;    // [blocks*16] sum of codes
};

enum class ActQuant {
  token,    // per row asymmetric (8da4w)
  block32,  // per 32 inputs symmetric (Q8_0)
};

/// Dynamically quantized activations [M, K] (K = the weight's padded K; columns past the real
/// input length hold the code of 0). Codes are stored biased: a = q + 128 in 0..255, so the
/// activation the integer dot sees is a - zero[m].
struct QuantizedActs {
  ActQuant scheme = ActQuant::token;
  int M = 0, K = 0;
  std::vector<uint8_t> codes;   // [M, K]
  std::vector<float> scales;    // token: [M]; block32: [M, K/32]
  std::vector<int32_t> zero;    // [M]: 128 + zp (token), 128 (block32)
  std::vector<int32_t> sums;    // [M, K/16] sum of codes a over each 16 inputs
  /// Sizes the buffers (reuses capacity). K must be a multiple of 16 (block32: of 32).
  void resize(ActQuant s, int m, int k);
};

/// One instruction set's kernels. Ranges [b0, b1) are blocks of 16 output channels; [m0, m1) rows.
/// Outputs are y [M, O] with row stride ldy; bias may be null.
struct Kernels {
  const char* name;
  /// x [M, K_in] (row stride ldx) -> acts rows [m0, m1) (acts already resized, K >= K_in).
  void (*quantize_token)(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& acts);
  void (*quantize_block32)(const float* x, size_t ldx, int k_in, int m0, int m1, QuantizedActs& acts);
  /// int4 weights x int8 activations (either scheme; block32 needs group % 32 == 0).
  void (*gemm_q4)(const QuantizedActs& a, const PackedQ4& w, const float* bias, float* y, size_t ldy,
                  int b0, int b1);
  /// int8 per-channel weights x int8 per-token activations.
  void (*gemm_q8)(const QuantizedActs& a, const PackedQ8& w, const float* bias, float* y, size_t ldy,
                  int b0, int b1);
  /// Weight-only: float x [M, k_in] (stride ldx) x dequantized int4 weights. Per group:
  /// g = fma-chain over k of x * float(u - z); acc = fma(g, s_w, acc); y = acc + bias.
  void (*gemm_q4_f32)(const float* x, size_t ldx, int M, int k_in, const PackedQ4& w, const float* bias,
                      float* y, size_t ldy, int b0, int b1);
  /// Weight-only int8: acc = fma-chain over k of x * float(q); y = fma(acc, s_w, bias).
  void (*gemm_q8_f32)(const float* x, size_t ldx, int M, int k_in, const PackedQ8& w, const float* bias,
                      float* y, size_t ldy, int b0, int b1);
  /// Float: y[m, o] = sum_k x[m, k] * w[o, k] (+ bias[o]) for o in [o0, o1); x [M, K], w [O, K] (stride ldw).
  void (*gemm_f32)(const float* x, size_t ldx, int M, int K, const float* w, size_t ldw, const float* bias,
                   float* y, size_t ldy, int o0, int o1);
  float (*dot_f32)(const float* a, const float* b, int n);
  /// IEEE half <-> float, round to nearest even.
  void (*f32_to_f16)(const float* x, uint16_t* h, size_t n);
  void (*f16_to_f32)(const uint16_t* h, float* x, size_t n);
  /// Attention of G query heads sharing one key/value head over positions [0, n): for each g,
  /// p = softmax_j(scale * q[g] . k[j]), out[g] = sum_j p[j] v[j]. q and out [G, hd]; k and v
  /// [n, hd] with row stride ldkv; scores [G, n] scratch. Float, ISA-specific summation order.
  void (*attend)(const float* q, const float* k, const float* v, size_t ldkv, int n, int hd, int G, float scale,
                 float* scores, float* out);
  /// y[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u (the SwiGLU gate; y may alias g).
  void (*silu_mul)(const float* g, const float* u, float* y, size_t n);
  /// `attend` with keys and values stored as IEEE half (the fp16 KV cache, read in place); the same
  /// bits as `attend` on the converted rows. Null in sets without one (callers convert first).
  void (*attend_f16)(const float* q, const uint16_t* k, const uint16_t* v, size_t ldkv, int n, int hd, int G,
                     float scale, float* scores, float* out);
};

/// The kernels this process uses: the best set the CPU supports, or the one EDGEVLM_KERNELS names
/// (scalar, avx2, avx512, neon; throws edgevlm::Error when that set is not available here).
const Kernels& kernels();
/// A set by name, or null when this build or CPU lacks it.
const Kernels* kernels_by_name(const char* name);
/// The names of every set this build and CPU can run, scalar first.
std::vector<const char*> available_kernels();

/// Repacks stored int4 weights: qdata uint8 [O, K/2] (low nibble = even input), scales [O, K/group]
/// float32 or (scales_fp16) IEEE half bits, zeros uint8 [O, K/group] or null (symmetric).
PackedQ4 pack_q4(const uint8_t* qdata, int O, int K, int group, const void* scales, bool scales_fp16,
                 const uint8_t* zeros);
/// Repacks stored int8 weights: qdata int8 [O, K], scales [O] (float32 or fp16 bits).
PackedQ8 pack_q8(const int8_t* qdata, int O, int K, const void* scales, bool scales_fp16);

/// Quantizes x [M, k_in] into acts (K = k_pad), splitting rows over the pool (may be null).
void quantize_acts(const Kernels& k, ThreadPool* pool, ActQuant s, const float* x, size_t ldx, int M, int k_in,
                   int k_pad, QuantizedActs& acts);
/// y [M, O] = the quantized linear layers above, channel blocks split over the pool (may be null).
void linear_q4(const Kernels& k, ThreadPool* pool, const QuantizedActs& a, const PackedQ4& w, const float* bias,
               float* y, size_t ldy);
void linear_q8(const Kernels& k, ThreadPool* pool, const QuantizedActs& a, const PackedQ8& w, const float* bias,
               float* y, size_t ldy);
void linear_q4_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int k_in,
                   const PackedQ4& w, const float* bias, float* y, size_t ldy);
void linear_q8_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int k_in,
                   const PackedQ8& w, const float* bias, float* y, size_t ldy);
/// y [M, O] = x [M, K] w[O, K]^T + bias.
void linear_f32(const Kernels& k, ThreadPool* pool, const float* x, size_t ldx, int M, int K, const float* w,
                size_t ldw, int O, const float* bias, float* y, size_t ldy);

/// Scalar IEEE half conversions (round to nearest even), usable anywhere.
uint16_t f32_to_f16_scalar(float f);
float f16_to_f32_scalar(uint16_t h);

}  // namespace edgevlm::cpu
