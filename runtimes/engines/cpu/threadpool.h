// A fixed pool of worker threads for the CPU engine's data-parallel loops.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgevlm::cpu {

/// `threads` workers in total, the calling thread included (threads - 1 are spawned). [0, n) is cut
/// into up to 4 contiguous chunks per thread, always the same way for a given n and thread count;
/// every participant takes the next chunk from an atomic counter, so a worker the OS has not
/// scheduled yet never holds the caller up (its chunks are taken by the others). Workers spin
/// briefly after each job (the next kernel usually follows within microseconds), then sleep on a
/// condition variable. One parallel_for at a time (calls from several threads serialize).
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }
  /// Calls fn(begin, end) on disjoint ranges covering [0, n), returns when all are done. The first
  /// exception thrown by fn is rethrown here (after every range has finished).
  void parallel_for(int n, const std::function<void(int, int)>& fn);

 private:
  void worker();
  void run_chunks();

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serializes parallel_for callers
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> next_{0};  // job id (bits 40..63), chunk count (20..39), next chunk (0..19)
  std::atomic<int> done_{0};  // chunks finished
  std::atomic<bool> stop_{false};
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  int parts_ = 0;
  uint64_t job_ = 0;
  std::exception_ptr error_;
  std::mutex error_mu_;
};

}  // namespace edgevlm::cpu
