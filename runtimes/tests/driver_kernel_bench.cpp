// Micro-benchmark of the CPU kernels on SmolLM2-135M-shaped layers: GOPS (2*M*O*K / time) per
// kernel set, layer kind and row count, with 1 and 2 threads. Not a test; prints a table.
//   driver_kernel_bench [--quick] [--set avx2] [--only "q4 a=token"] [--cpu-only]
// --only keeps the kernels whose name contains the text; --cpu-only skips the wall-clock columns.
//   driver_kernel_bench --model BUNDLE [--threads 1] [--chunk 64] [--decode-only]
// times a bundle's decoder end to end instead (random prompt ids): prefill of 128 and 512 tokens
// and decode steps at those depths, by process CPU time (best of several runs; with one thread a
// figure that load on the machine barely moves) and by wall time.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/bundle.h"
#include "core/prefill.h"
#include "engines/cpu/cpu_engine.h"
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

// cpu: measure this thread's CPU time (robust on a loaded machine; single-thread runs only). The
// best of 8 batches: other load on the machine only ever slows a batch down.
template <class F>
double seconds_per_call(F&& f, double budget, bool cpu) {
  f();
  double best = 1e30;
  for (int batch = 0; batch < 8; ++batch) {
    int n = 0;
    const double t0 = now(cpu);
    double el = 0;
    do {
      f();
      ++n;
      el = now(cpu) - t0;
    } while (el < budget / 8);
    best = std::min(best, el / n);
  }
  return best;
}

double process_cpu() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int bench_model(const std::string& dir, int threads, int chunk, bool decode_only) {
  edgevlm::cpu::EngineOptions opt;
  opt.threads = threads;
  auto engine = CpuEngine::load(edgevlm::Bundle::open(dir, false), opt);
  const int H = engine->hidden_size(), V = engine->vocab_size();
  std::mt19937 rng(3);
  std::vector<int64_t> ids(512);
  for (auto& id : ids) id = int64_t(rng() % uint32_t(V));
  std::vector<float> rows(ids.size() * H), logits(V), row(H);
  engine->embed(ids.data(), int(ids.size()), rows.data());
  std::printf("%s: %d threads (%s), chunk %d\n", dir.c_str(), engine->threads(), engine->kernels_name(), chunk);
  std::printf("%-14s %12s %12s\n", "step", "tok/s(cpu)", "tok/s(wall)");
  for (int n : {128, 512}) {
    double best_cpu = 1e30, best_wall = 1e30;
    for (int rep = 0; rep < (decode_only ? 1 : 3); ++rep) {
      engine->reset();
      const double c0 = process_cpu(), w0 = now(false);
      edgevlm::run_prefill(*engine, rows.data(), n, 0, chunk, logits.data());
      best_cpu = std::min(best_cpu, process_cpu() - c0);
      best_wall = std::min(best_wall, now(false) - w0);
    }
    std::printf("prefill@%-6d %12.1f %12.1f\n", n, n / best_cpu, n / best_wall);
    std::fflush(stdout);
    double dcpu = 1e30, dwall = 1e30;
    for (int rep = 0; rep < (decode_only ? 12 : 4); ++rep) {  // batches of 8 steps from depth n
      const int steps = 8;
      const double c0 = process_cpu(), w0 = now(false);
      for (int t = 0; t < steps; ++t) {
        const int best = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
        const int64_t id = best;
        engine->embed(&id, 1, row.data());
        engine->decode(row.data(), n + rep * steps + t, logits.data());
      }
      dcpu = std::min(dcpu, (process_cpu() - c0) / steps);
      dwall = std::min(dwall, (now(false) - w0) / steps);
    }
    std::printf("decode@%-7d %12.1f %12.1f\n", n, 1 / dcpu, 1 / dwall);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, cpu_only = false, decode_only = false;
  std::string only_set, only, model;
  int threads = 1, chunk = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--cpu-only") cpu_only = true;
    else if (a == "--decode-only") decode_only = true;
    else if (a == "--set" && i + 1 < argc) only_set = argv[++i];
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--chunk" && i + 1 < argc) chunk = std::atoi(argv[++i]);
  }
  if (!model.empty()) return bench_model(model, threads, chunk, decode_only);
  const double budget = quick ? 0.05 : 0.3;
  std::mt19937 rng(7);
  struct Shape {
    const char* name;
    int O, K;
  };
  const Shape shapes[] = {{"gate/up 1536x576", 1536, 576}, {"down 576x1536", 576, 1536}};
  const int rows[] = {1, 64, 128};
  std::printf("%-8s %-18s %-14s %5s %10s %8s %8s\n", "set", "layer", "kernel", "M", "1thr(cpu)", "1 thr", "2 thr");
  for (const char* set : available_kernels()) {
    if (!only_set.empty() && only_set != set) continue;
    const Kernels& k = *kernels_by_name(set);
    for (const Shape& s : shapes) {
      std::vector<uint8_t> q4(size_t(s.O) * s.K / 2);
      std::vector<int8_t> q8(size_t(s.O) * s.K);
      for (auto& v : q4) v = uint8_t(rng());
      for (auto& v : q8) v = int8_t(rng());
      std::vector<float> sc(size_t(s.O) * (s.K / 32), 0.01f), wf(size_t(s.O) * s.K, 0.01f);
      const PackedQ4 w4 = pack_q4(q4.data(), s.O, s.K, 32, sc.data(), false, nullptr);
      // copies of the weights well past the last-level cache, cycled through: M=1 from memory
      const bool want_stream = only.empty() || std::string("q4 gemm stream").find(only) != std::string::npos;
      std::vector<PackedQ4> w4s(want_stream ? 96 : 0, w4);
      size_t w4i = 0;
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
            {"q4 gemm only", [&](ThreadPool* p) { linear_q4(k, p, at, w4, nullptr, y.data(), s.O); }},
            {"q4 gemm stream", [&](ThreadPool* p) {
               if (M == 1) linear_q4(k, p, at, w4s[w4i++ % w4s.size()], nullptr, y.data(), s.O);
             }},
            {"quantize token", [&](ThreadPool* p) {
               quantize_acts(k, p, ActQuant::token, x.data(), s.K, M, s.K, s.K, at);
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
          if (!only.empty() && std::string(r.name).find(only) == std::string::npos) continue;
          const double t1c = seconds_per_call([&] { r.fn(nullptr); }, budget, true);
          const double t1 = cpu_only ? t1c : seconds_per_call([&] { r.fn(nullptr); }, budget, false);
          const double t2 = cpu_only ? t1c : seconds_per_call([&] { r.fn(&pool); }, budget, false);
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
