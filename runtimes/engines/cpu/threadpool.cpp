#include "engines/cpu/threadpool.h"

#include <algorithm>

#include "core/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EDGEVLM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define EDGEVLM_PAUSE() asm volatile("yield")
#else
#define EDGEVLM_PAUSE() ((void)0)
#endif

namespace edgevlm::cpu {

namespace {
constexpr int kSpinIters = 20000;  // ~50-100 us of polling before sleeping
}

ThreadPool::ThreadPool(int threads) : threads_(threads) {
  if (threads < 1 || threads > 1024)
    fail(ErrorCode::kInvalidArgument, "thread count must be in 1..1024, got " + std::to_string(threads));
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  // A worker can arrive late, after its job ended and the next one began: the job id, chunk count
  // and index live in one word, taken by compare-and-swap, so nobody takes a chunk of a job it
  // did not read the parameters of (fn_ and n_ stay fixed until every chunk of the job is done).
  for (;;) {
    uint64_t v = next_.load(std::memory_order_acquire);
    int c, parts;
    do {
      parts = int((v >> 20) & 0xFFFFF);
      c = int(v & 0xFFFFF);
      if (c >= parts) return;
    } while (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    const int b = int(int64_t(n_) * c / parts), e = int(int64_t(n_) * (c + 1) / parts);
    try {
      (*fn_)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == parts) {
      std::lock_guard<std::mutex> lk(mu_);
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < kSpinIters; ++spin) {
      EDGEVLM_PAUSE();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    run_chunks();
  }
}

void ThreadPool::parallel_for(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  if (threads_ == 1 || n == 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    parts_ = std::min(n, std::min(4 * threads_, 0xFFFFF));
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    ++job_;
    next_.store((job_ & 0xFFFFFF) << 40 | uint64_t(parts_) << 20, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_chunks();
  for (int spin = 0; done_.load(std::memory_order_acquire) != parts_ && spin < kSpinIters; ++spin) EDGEVLM_PAUSE();
  if (done_.load(std::memory_order_acquire) != parts_) {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == parts_; });
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lk(error_mu_);
    err = error_;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace edgevlm::cpu
