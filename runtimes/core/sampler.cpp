#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.h"

namespace edgevlm {

void SamplingParams::validate() const {
  auto bad = [](const std::string& what) { fail(ErrorCode::kInvalidArgument, "sampling: " + what); };
  if (max_new_tokens < 0) bad("max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) bad("temperature must be >= 0, got " + std::to_string(temperature));
  if (top_k < 0) bad("top_k must be >= 0, got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) bad("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
    bad("repetition_penalty must be > 0, got " + std::to_string(repetition_penalty));
}

int32_t argmax(const float* x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) { p_.validate(); }

int32_t Sampler::sample(float* logits, int n, const std::vector<int32_t>& history) {
  if (n <= 0) fail(ErrorCode::kInternal, "sampler: empty logits");
  if (p_.repetition_penalty != 1.0f) {
    std::vector<int32_t> seen(history);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n) continue;
      float& v = logits[id];
      v = v > 0 ? v / p_.repetition_penalty : v * p_.repetition_penalty;
    }
  }
  if (p_.temperature == 0.0f) return argmax(logits, n);
  for (int i = 0; i < n; ++i) logits[i] /= p_.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (p_.top_k > 0 && p_.top_k < n) {
    std::vector<float> tmp(logits, logits + n);
    std::nth_element(tmp.begin(), tmp.begin() + (p_.top_k - 1), tmp.end(), std::greater<float>());
    const float kth = tmp[p_.top_k - 1];
    for (int i = 0; i < n; ++i)
      if (logits[i] < kth) logits[i] = neg_inf;
  }
  // softmax over what is left
  const float mx = logits[argmax(logits, n)];
  probs_.assign(n, 0.0f);
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    probs_[i] = logits[i] == neg_inf ? 0.0f : std::exp(logits[i] - mx);
    total += probs_[i];
  }
  for (int i = 0; i < n; ++i) probs_[i] = float(probs_[i] / total);
  if (p_.top_p < 1.0f) {
    // keep the smallest prefix (by decreasing probability) whose mass before each kept token is < top_p
    order_.resize(n);
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) { return probs_[a] > probs_[b]; });
    double before = 0.0;
    for (int r = 0; r < n; ++r) {
      const int32_t i = order_[r];
      const double pi = probs_[i];
      if (r > 0 && before >= p_.top_p) probs_[i] = 0.0f;
      before += pi;
    }
    double kept = 0.0;
    for (int i = 0; i < n; ++i) kept += probs_[i];
    for (int i = 0; i < n; ++i) probs_[i] = float(probs_[i] / kept);
  }
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  const double u = uni(rng_);
  double acc = 0.0;
  int32_t last = -1;
  for (int i = 0; i < n; ++i) {
    if (probs_[i] <= 0.0f) continue;
    acc += probs_[i];
    last = i;
    if (u < acc) return i;
  }
  return last >= 0 ? last : argmax(logits, n);
}

}  // namespace edgevlm
