#include "core/prefill.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "core/chunk_plan.h"
#include "core/error.h"

namespace edgevlm {

void run_prefill(Engine& engine, const float* rows, int n, int start, int chunk_size, float* logits,
                 std::vector<double>* chunk_ms) {
  if (n < 1) fail(ErrorCode::kInvalidArgument, "empty prompt: nothing to prefill");
  const size_t H = engine.hidden_size();
  const std::vector<Chunk> plan = plan_chunks(n, start, chunk_size, engine.max_context());
  std::vector<float> padded;
  for (const Chunk& c : plan) {
    const float* step = rows + c.begin * H;
    if (c.pad()) {
      padded.assign(c.size * H, 0.f);
      std::copy(step, step + (c.end - c.begin) * H, padded.begin() + c.pad() * H);
      step = padded.data();
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (c.size > 1) {
      engine.prefill(step, c.positions.data(), c.size, logits);
    } else {
      engine.decode(step, c.positions[0], logits);
    }
    if (chunk_ms) {
      chunk_ms->push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
}

void run_score(Engine& engine, const float* rows, const int32_t* ids, int n, int start, int chunk_size,
               float* logprobs, float* logits, std::vector<double>* chunk_ms) {
  if (n < 2) fail(ErrorCode::kInvalidArgument, "scoring needs at least two tokens");
  const size_t H = engine.hidden_size();
  const std::vector<Chunk> plan = plan_chunks(n, start, chunk_size, engine.max_context());
  std::vector<float> padded, out;
  std::vector<int32_t> targets;
  for (const Chunk& c : plan) {
    const float* step = rows + c.begin * H;
    if (c.pad()) {
      padded.assign(c.size * H, 0.f);
      std::copy(step, step + (c.end - c.begin) * H, padded.begin() + c.pad() * H);
      step = padded.data();
    }
    // the target of row r is ids[r + 1]; padding rows and the prompt's last row take id 0 (unused)
    targets.assign(c.size, 0);
    for (int r = c.begin; r < c.end && r + 1 < n; ++r) targets[c.pad() + (r - c.begin)] = ids[r + 1];
    out.resize(c.size);
    const auto t0 = std::chrono::steady_clock::now();
    engine.score(step, c.positions.data(), c.size, targets.data(), out.data(), logits);
    if (chunk_ms) {
      chunk_ms->push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    for (int r = c.begin; r < c.end && r + 1 < n; ++r) logprobs[r] = out[c.pad() + (r - c.begin)];
  }
}

void merge_image_features(const int64_t* ids, int n, int64_t image_token_id, const float* features, int n_features,
                          int hidden, float* rows) {
  int slots = 0;
  for (int i = 0; i < n; ++i) slots += ids[i] == image_token_id;
  if (slots != n_features) {
    fail(ErrorCode::kInvalidArgument, "the prompt has " + std::to_string(slots) + " image tokens but the images give " +
                                          std::to_string(n_features) + " features");
  }
  int f = 0;
  for (int i = 0; i < n; ++i) {
    if (ids[i] == image_token_id) {
      std::copy(features + static_cast<size_t>(f) * hidden, features + static_cast<size_t>(f + 1) * hidden,
                rows + static_cast<size_t>(i) * hidden);
      ++f;
    }
  }
}

}  // namespace edgevlm
