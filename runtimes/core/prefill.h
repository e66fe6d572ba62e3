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

/// Scatters image features [n_features, H] into the rows [n, H] whose id is image_token_id, in
/// order. The counts must match (Error kInvalidArgument otherwise).
void merge_image_features(const int64_t* ids, int n, int64_t image_token_id, const float* features,
                          int n_features, int hidden, float* rows);

}  // namespace edgevlm
