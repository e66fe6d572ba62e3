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

/// `threads` workers in total, the calling thread included (threads - 1 are spawned). Work is cut
/// into one contiguous range per thread, so a given n and thread count always splits the same way.
/// Workers spin briefly after each job (the next kernel usually follows within microseconds), then
/// sleep on a condition variable. One parallel_for at a time (calls from several threads serialize).
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
  void worker(int index);
  void run_range(int index);

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serializes parallel_for callers
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  int parts_ = 0;
  std::exception_ptr error_;
  std::mutex error_mu_;
};

}  // namespace edgevlm::cpu
