// The chunked-prefill plan every engine follows (edgevlm/engine.py, plan_chunks; ARCHITECTURE.md
// contract 3): full chunks of C rows in order; a shorter last chunk is padded at its *front* with
// zero rows placed at the free positions right after the prompt, so its last row is the prompt's
// last token; where a padded chunk would run past the context, the remaining rows go through
// single-row steps.
#pragma once

#include <cstdint>
#include <vector>

namespace edgevlm {

/// Rows [begin, end) of the prompt, run as one static step of `size` rows.
struct Chunk {
  int begin = 0;
  int end = 0;
  int size = 0;                  // chunk size C, or 1 for a single-row step
  std::vector<int32_t> positions;  // [size]: one per row of the step, padding rows first
  int pad() const { return size - (end - begin); }
};

/// Splits n prompt rows at absolute positions start..start+n-1 into static steps.
/// chunk_size < 1 -> Error(kInvalidArgument); start + n > max_context -> Error(kContextOverflow).
std::vector<Chunk> plan_chunks(int n, int start, int chunk_size, int max_context);

}  // namespace edgevlm
