// Chunk boundaries and positions of the prefill plan, without a model (mirrors plan_chunks in
// edgevlm/engine.py).
#include <vector>

#include "check.h"
#include "core/chunk_plan.h"
#include "core/error.h"

using edgevlm::Chunk;
using edgevlm::plan_chunks;

static std::vector<int32_t> range(int a, int b) {
  std::vector<int32_t> v;
  for (int i = a; i < b; ++i) v.push_back(i);
  return v;
}

static bool covers_prompt(const std::vector<Chunk>& plan, int n, int start) {
  // every prompt row appears exactly once, at position start + row, as the chunk's last rows
  std::vector<int> seen(n, 0);
  for (const Chunk& c : plan) {
    if (static_cast<int>(c.positions.size()) != c.size) return false;
    for (int r = c.begin; r < c.end; ++r) {
      if (c.positions[c.pad() + (r - c.begin)] != start + r) return false;
      ++seen[r];
    }
  }
  for (int s : seen) {
    if (s != 1) return false;
  }
  return true;
}

int main() {
  {  // exact multiple: full chunks only
    auto p = plan_chunks(8, 0, 4, 64);
    CHECK(p.size() == 2);
    CHECK(p[0].begin == 0 && p[0].end == 4 && p[0].size == 4 && p[0].pad() == 0);
    CHECK(p[0].positions == range(0, 4));
    CHECK(p[1].positions == range(4, 8));
  }
  {  // ragged last chunk: padded at the front with the free positions after the prompt
    auto p = plan_chunks(10, 0, 4, 64);
    CHECK(p.size() == 3);
    CHECK(p[2].begin == 8 && p[2].end == 10 && p[2].size == 4 && p[2].pad() == 2);
    CHECK((p[2].positions == std::vector<int32_t>{10, 11, 8, 9}));
    CHECK(covers_prompt(p, 10, 0));
  }
  {  // start offset (a second turn)
    auto p = plan_chunks(3, 20, 8, 64);
    CHECK(p.size() == 1);
    CHECK((p[0].positions == std::vector<int32_t>{23, 24, 25, 26, 27, 20, 21, 22}));
    CHECK(covers_prompt(p, 3, 20));
  }
  {  // a padded chunk would run past the context: single-row steps
    auto p = plan_chunks(6, 0, 4, 7);
    CHECK(p.size() == 3);
    CHECK(p[0].size == 4);
    CHECK(p[1].size == 1 && p[1].begin == 4 && p[1].positions == std::vector<int32_t>{4});
    CHECK(p[2].size == 1 && p[2].begin == 5 && p[2].positions == std::vector<int32_t>{5});
    CHECK(covers_prompt(p, 6, 0));
  }
  {  // chunk size 1: one step per row
    auto p = plan_chunks(5, 2, 1, 16);
    CHECK(p.size() == 5);
    for (int i = 0; i < 5; ++i) CHECK(p[i].size == 1 && p[i].positions[0] == 2 + i);
  }
  {  // exactly fills the context
    auto p = plan_chunks(16, 0, 16, 16);
    CHECK(p.size() == 1 && p[0].pad() == 0);
    CHECK(plan_chunks(0, 0, 4, 16).empty());
  }
  for (int n = 1; n < 40; ++n) {  // property: every row exactly once, positions within the context
    for (int c : {1, 3, 16, 64}) {
      for (int start : {0, 5}) {
        const int ctx = 48;
        if (start + n > ctx) continue;
        auto p = plan_chunks(n, start, c, ctx);
        CHECK(covers_prompt(p, n, start));
        for (const Chunk& ch : p) {
          for (int32_t pos : ch.positions) CHECK(pos >= 0 && pos < ctx);
        }
      }
    }
  }
  {  // errors
    bool threw = false;
    try {
      plan_chunks(10, 0, 0, 16);
    } catch (const edgevlm::Error& e) {
      threw = e.code() == edgevlm::ErrorCode::kInvalidArgument;
    }
    CHECK(threw);
    threw = false;
    try {
      plan_chunks(10, 8, 4, 16);
    } catch (const edgevlm::Error& e) {
      threw = e.code() == edgevlm::ErrorCode::kContextOverflow;
    }
    CHECK(threw);
  }
  return edgevlm_test::finish("test_chunk_plan");
}
