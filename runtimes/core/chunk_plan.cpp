#include "core/chunk_plan.h"

#include <string>

#include "core/error.h"

namespace edgevlm {

std::vector<Chunk> plan_chunks(int n, int start, int chunk_size, int max_context) {
  if (chunk_size < 1) fail(ErrorCode::kInvalidArgument, "chunk size must be >= 1, got " + std::to_string(chunk_size));
  if (n < 0 || start < 0) fail(ErrorCode::kInvalidArgument, "negative prompt length or start position");
  if (static_cast<int64_t>(start) + n > max_context) {
    fail(ErrorCode::kContextOverflow, "prompt of " + std::to_string(n) + " tokens starting at position " +
                                          std::to_string(start) + " does not fit the context of " +
                                          std::to_string(max_context) + " tokens");
  }
  std::vector<Chunk> plan;
  int row = 0;
  while (row < n) {
    const int left = n - row;
    const int pos = start + row;
    Chunk c;
    if (left >= chunk_size) {
      c.begin = row, c.end = row + chunk_size, c.size = chunk_size;
      for (int i = 0; i < chunk_size; ++i) c.positions.push_back(pos + i);
      plan.push_back(std::move(c));
      row += chunk_size;
    } else if (static_cast<int64_t>(pos) + chunk_size <= max_context) {
      c.begin = row, c.end = n, c.size = chunk_size;
      for (int p = pos + left; p < pos + chunk_size; ++p) c.positions.push_back(p);  // padding first
      for (int p = pos; p < pos + left; ++p) c.positions.push_back(p);
      plan.push_back(std::move(c));
      row = n;
    } else {
      for (int r = row; r < n; ++r) plan.push_back(Chunk{r, r + 1, 1, {start + r}});
      row = n;
    }
  }
  return plan;
}

}  // namespace edgevlm
