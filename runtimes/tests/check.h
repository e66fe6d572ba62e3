// A minimal test harness for the C++ tests: CHECK(cond) records a failure with file and line,
// each test executable returns non-zero when any check failed (ctest reads the exit code).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace edgevlm_test {
inline int& failures() {
  static int n = 0;
  return n;
}
inline int finish(const char* name) {
  if (failures() == 0) {
    std::printf("%s: all checks passed\n", name);
    return 0;
  }
  std::printf("%s: %d check(s) FAILED\n", name, failures());
  return 1;
}
}  // namespace edgevlm_test

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++edgevlm_test::failures();                                                \
    }                                                                            \
  } while (0)

#define CHECK_NEAR(a, b, tol) CHECK(std::fabs(double(a) - double(b)) <= double(tol))
