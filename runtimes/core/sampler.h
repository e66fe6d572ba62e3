// Next-token sampling, in the order of transformers' generate (and edgevlm/sampling.py):
// repetition penalty, temperature, top-k, top-p, then a seeded draw from the softmax.
// Temperature 0 is greedy: argmax, the first index on ties (the same token as the Python reference).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace edgevlm {

struct SamplingParams {
  int max_new_tokens = 128;
  float temperature = 0.0f;         // 0: greedy
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off; applies to every id of the prompt and the output
  uint64_t seed = 0;
  bool ignore_eos = false;          // keep going past stop tokens (benchmarks)

  /// Throws edgevlm::Error(kInvalidArgument) naming the first bad field.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  /// One id from logits [n] given every id seen so far. `logits` is used as scratch.
  int32_t sample(float* logits, int n, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;
  std::vector<float> probs_;
};

/// Index of the largest value, the first one on ties.
int32_t argmax(const float* x, int n);

}  // namespace edgevlm
