// Linear layers of the CPU engine as the bundle records them (docs/QUANTIZATION.md): float, int4
// group-wise or int8 per-channel weights packed once at load, run with the activation scheme the
// recipe chose (weight-only, a=token, a=group32, a=static with float outlier channels). Weights
// are read through WeightSource, which checks every tensor's name, dtype and shape.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bundle.h"
#include "core/safetensors.h"
#include "engines/cpu/kernels.h"

namespace edgevlm::cpu {

class ThreadPool;

/// Below this many multiply-adds a call runs on the calling thread: waking the workers costs more
/// than the work (and far more on a loaded machine).
constexpr int64_t kMinParallelWork = int64_t{1} << 17;

/// What a forward pass needs at hand: the kernel set, the pool and reusable scratch.
struct Compute {
  const Kernels* k = nullptr;
  ThreadPool* pool = nullptr;
  /// The pool for a step of `work` multiply-adds, or null when it is too small to split.
  ThreadPool* pool_for(int64_t work) const { return work >= kMinParallelWork ? pool : nullptr; }
  QuantizedActs acts;            // activation codes [M, K_pad], reused by every quantized linear
};

enum class WeightKind { f32, q4, q8 };
enum class ActScheme { none, token, group32, static_ };

/// y [M, out] = x [M, in] W^T + b, in the layer's recorded scheme.
struct Linear {
  std::string path;
  int in = 0, out = 0;
  WeightKind kind = WeightKind::f32;
  ActScheme act = ActScheme::none;
  std::vector<float> w_owned;        // f32: [out, in] (converted to float32 from any float dtype)
  PackedQ4 q4;                       // q4: packed codes, scales, zeros
  PackedQ8 q8;                       // q8
  std::vector<float> bias;           // [out] or empty
  float act_scale = 0.f;             // static: per-tensor activation scale
  std::vector<int64_t> outlier_idx;  // static: [n] input channels computed in float
  std::vector<float> outlier_w;      // static: [out, n]
  std::vector<uint8_t> is_outlier;   // static: [in] 1 for the outlier channels

  void forward(Compute& c, const float* x, int M, float* y) const;
};

/// Fuses `parts` (same input) into `out`, whose outputs are theirs side by side; the parts are
/// emptied. False (nothing changed) when they differ in weight kind, activation scheme, input
/// length, grouping or bias presence, or a quantized part's outputs are not whole blocks of 16.
bool fuse_linears(const std::vector<Linear*>& parts, Linear& out);

/// A float vector or matrix copied out of the weights (any float dtype converted to float32).
using Floats = std::vector<float>;

/// Reads an edgevlm model directory's tensors: our module paths in quantized directories, the
/// family's checkpoint names (HF prefixes) in float ones.
class WeightSource {
 public:
  WeightSource(const Bundle& bundle, const std::string& family);

  bool has(const std::string& name) const;
  /// A float tensor of `shape` (-1: any), converted to float32.
  Floats floats(const std::string& name, const std::vector<int64_t>& shape) const;
  /// The linear layer at module path `path` ([out, in]); bias read when `bias` is true (the
  /// checkpoint must have it then).
  Linear linear(const std::string& path, int out, int in, bool bias) const;
  /// A linear reading the token embedding's weights (tied LM head).
  Linear tied_head(const std::string& embed_path, const std::string& head_path, int vocab, int hidden) const;
  /// Rows of the token embedding at `path` ([vocab, hidden]), dequantized on demand.
  struct Embedding {
    int vocab = 0, dim = 0;
    WeightKind kind = WeightKind::f32;
    Floats w_owned;                  // f32 [vocab, dim]
    const uint8_t* qdata = nullptr;  // q4: [vocab, K_pad/2]; q8: int8 [vocab, K_pad]
    int k_pad = 0, group = 0;
    Floats scales;                   // [vocab, G]
    std::vector<uint8_t> zeros;      // [vocab, G] (asymmetric int4) or empty
    void row(int64_t id, float* out) const;
  };
  Embedding embedding(const std::string& path, int vocab, int dim) const;

 private:
  std::string resolve(const std::string& ours) const;  // the stored name, or "" when absent
  const TensorView& get(const std::string& ours) const;
  const SafeTensors& st_;
  const Bundle& bundle_;
  std::vector<std::pair<std::string, std::string>> prefixes_;  // (ours, stored), longest first
};

}  // namespace edgevlm::cpu
