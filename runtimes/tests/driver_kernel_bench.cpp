// Micro-benchmark of the CPU kernels on SmolLM2-135M-shaped layers: GOPS (2*M*O*K / time) per
// kernel set, layer kind and row count, with 1 and 2 threads. Not a test; prints a table.
//   driver_kernel_bench [--quick]
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engines/cpu/kernels.h"
#include "engines/cpu/threadpool.h"

using namespace edgevlm::cpu;

namespace {

double now(bool cpu) {
  if (!cpu) return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// cpu: measure this thread's CPU time (robust on a loaded machine; single-thread runs only).
template <class F>
double seconds_per_call(F&& f, double budget, bool cpu) {
  f();
  int n = 0;
  const double t0 = now(cpu);
  double el = 0;
  do {
    f();
    ++n;
    el = now(cpu) - t0;
  } while (el < budget);
  return el / n;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const double budget = quick ? 0.05 : 0.3;
  std::mt19937 rng(7);
  struct Shape {
    const char* name;
    int O, K;
  };
  const Shape shapes[] = {{"gate/up 1536x576", 1536, 576}, {"down 576x1536", 576, 1536}};
  const int rows[] = {1, 128};
  std::printf("%-8s %-18s %-14s %5s %10s %8s %8s\n", "set", "layer", "kernel", "M", "1thr(cpu)", "1 thr", "2 thr");
  for (const char* set : available_kernels()) {
    const Kernels& k = *kernels_by_name(set);
    for (const Shape& s : shapes) {
      std::vector<uint8_t> q4(size_t(s.O) * s.K / 2);
      std::vector<int8_t> q8(size_t(s.O) * s.K);
      for (auto& v : q4) v = uint8_t(rng());
      for (auto& v : q8) v = int8_t(rng());
      std::vector<float> sc(size_t(s.O) * (s.K / 32), 0.01f), wf(size_t(s.O) * s.K, 0.01f);
      const PackedQ4 w4 = pack_q4(q4.data(), s.O, s.K, 32, sc.data(), false, nullptr);
      const PackedQ8 w8 = pack_q8(q8.data(), s.O, s.K, sc.data(), false);
      for (int M : rows) {
        if (std::string(set) == "scalar" && M > 1) continue;  // the reference is slow by design
        std::vector<float> x(size_t(M) * s.K), y(size_t(M) * s.O);
        std::normal_distribution<float> nd;
        for (auto& v : x) v = nd(rng);
        QuantizedActs at, ab;
        quantize_acts(k, nullptr, ActQuant::token, x.data(), s.K, M, s.K, s.K, at);
        quantize_acts(k, nullptr, ActQuant::block32, x.data(), s.K, M, s.K, s.K, ab);
        const double ops = 2.0 * M * s.O * s.K;
        struct Run {
          const char* name;
          std::function<void(ThreadPool*)> fn;
        };
        std::vector<Run> runs = {
            {"q4 a=token", [&](ThreadPool* p) {
               quantize_acts(k, p, ActQuant::token, x.data(), s.K, M, s.K, s.K, at);
               linear_q4(k, p, at, w4, nullptr, y.data(), s.O);
             }},
            {"q4 a=block32", [&](ThreadPool* p) {
               quantize_acts(k, p, ActQuant::block32, x.data(), s.K, M, s.K, s.K, ab);
               linear_q4(k, p, ab, w4, nullptr, y.data(), s.O);
             }},
            {"q4 weight-only", [&](ThreadPool* p) { linear_q4_f32(k, p, x.data(), s.K, M, s.K, w4, nullptr, y.data(), s.O); }},
            {"q8 a=token", [&](ThreadPool* p) {
               quantize_acts(k, p, ActQuant::token, x.data(), s.K, M, s.K, s.K, at);
               linear_q8(k, p, at, w8, nullptr, y.data(), s.O);
             }},
            {"q8 weight-only", [&](ThreadPool* p) { linear_q8_f32(k, p, x.data(), s.K, M, s.K, w8, nullptr, y.data(), s.O); }},
            {"f32", [&](ThreadPool* p) { linear_f32(k, p, x.data(), s.K, M, s.K, wf.data(), s.K, s.O, nullptr, y.data(), s.O); }},
        };
        ThreadPool pool(2);
        for (auto& r : runs) {
          const double t1c = seconds_per_call([&] { r.fn(nullptr); }, budget, true);
          const double t1 = seconds_per_call([&] { r.fn(nullptr); }, budget, false);
          const double t2 = seconds_per_call([&] { r.fn(&pool); }, budget, false);
          std::printf("%-8s %-18s %-14s %5d %10.1f %8.1f %8.1f\n", set, s.name, r.name, M, ops / t1c * 1e-9,
                      ops / t1 * 1e-9, ops / t2 * 1e-9);
          std::fflush(stdout);
        }
      }
    }
  }
  std::printf("(GOPS = 2*M*O*K / seconds, activation quantization included; 1thr(cpu) per CPU-second of the thread, the others per wall second)\n");
  return 0;
}
