// The prefiller: feeds prompt rows to any Engine in the steps of the chunk plan (core/chunk_plan.h),
// front-padding a short last chunk with zero rows, as edgevlm/engine.py run_prefill does.
#pragma once

#include <vector>

#include "engines/engine.h"

namespace edgevlm {

/// rows [n, H] at positions start..start+n-1 -> logits [V] of the last row. chunk_ms, when given,
/// receives each step's wall time in milliseconds. Throws Error on an empty prompt or overflow.
void run_prefill(Engine& engine, const float* rows, int n, int start, int chunk_size, float* logits,
                 std::vector<double>* chunk_ms = nullptr);

/// Teacher-forced scoring of rows [n, H] (the embeddings of ids [n]) at positions start..: the
/// prefill of run_prefill in the same steps, through Engine::score, with logprobs [n - 1] getting
/// log p(ids[i + 1] | ids[..i]) and logits [V] the last row's. Throws as run_prefill does.
void run_score(Engine& engine, const float* rows, const int32_t* ids, int n, int start, int chunk_size,
               float* logprobs, float* logits, std::vector<double>* chunk_ms = nullptr);

/// Scatters image features [n_features, H] into the rows [n, H] whose id is image_token_id, in
/// order. The counts must match (Error kInvalidArgument otherwise).
void merge_image_features(const int64_t* ids, int n, int64_t image_token_id, const float* features,
                          int n_features, int hidden, float* rows);

}  // namespace edgevlm
