#include "pool.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SQN_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define SQN_RELAX() asm volatile("yield")
#else
#define SQN_RELAX() ((void)0)
#endif

namespace sqn {

namespace {

// The work word: generation (24 bits) | task count (20) | next task (20).
constexpr int kIdxBits = 20;
constexpr uint64_t kIdxMask = (1ull << kIdxBits) - 1;
constexpr uint64_t kGenMask = (1ull << 24) - 1;
// Waiting threads yield the CPU every this many pauses. On an idle machine sched_yield returns
// at once (nothing else to run), so the wait stays a spin; on a loaded one it hands the core to
// whatever is runnable, often this process's own stream or Python thread. Measured under load
// (load average 3-4 on 2 cores): without yields, spinning workers cost decode 25-40%.
constexpr int kYieldEvery = 16;

inline uint32_t gen_of(uint64_t w) {
  return (uint32_t)(w >> (2 * kIdxBits));
}
inline int count_of(uint64_t w) {
  return (int)((w >> kIdxBits) & kIdxMask);
}
inline int next_of(uint64_t w) {
  return (int)(w & kIdxMask);
}

int default_threads() {
  if (const char* env = std::getenv("SQUISH_NATIVE_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

std::chrono::microseconds spin_budget() {
  if (const char* env = std::getenv("SQUISH_NATIVE_SPIN_US")) return std::chrono::microseconds(std::atoi(env));
  return std::chrono::microseconds(200);
}

}  // namespace

struct Pool::State {
  std::atomic<uint64_t> work{0};
  std::atomic<int> done{0};
  std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  Task task = nullptr;
  void* ctx = nullptr;
  std::mutex sleep_mtx;
  std::condition_variable wake;
  std::mutex run_mtx;  // one job at a time
  std::vector<std::thread> threads;
  std::chrono::microseconds spin = spin_budget();

  // Claims and runs tasks of generation `gen` until none are left.
  void drain(uint32_t gen) {
    uint64_t w = work.load(std::memory_order_acquire);
    while (gen_of(w) == gen && next_of(w) < count_of(w)) {
      if (work.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        task(ctx, next_of(w));
        done.fetch_add(1, std::memory_order_release);
        w = work.load(std::memory_order_acquire);
      }
    }
  }

  void worker() {
    // The generation every worker starts from is the pool's initial one (0), never the value
    // read when the thread happens to start: a job posted before that would be missed.
    uint32_t seen = 0;
    while (true) {
      auto deadline = std::chrono::steady_clock::now() + spin;
      int spins = 0;
      uint64_t w;
      while (gen_of(w = work.load(std::memory_order_acquire)) == seen) {
        if (stop.load(std::memory_order_relaxed)) return;
        SQN_RELAX();
        if (++spins % kYieldEvery == 0) std::this_thread::yield();
        if (spins % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
          std::unique_lock<std::mutex> lk(sleep_mtx);
          sleepers.fetch_add(1, std::memory_order_seq_cst);
          wake.wait(lk, [&] { return gen_of(work.load(std::memory_order_seq_cst)) != seen || stop.load(); });
          sleepers.fetch_sub(1, std::memory_order_seq_cst);
          deadline = std::chrono::steady_clock::now() + spin;
        }
      }
      seen = gen_of(w);
      drain(seen);
    }
  }
};

Pool& Pool::get() {
  static Pool* pool = new Pool();  // leaked on purpose: no joins at process exit
  return *pool;
}

Pool::Pool() : s_(new State()) {
  start(default_threads());
}

void Pool::start(int threads) {
  workers_ = threads > 1 ? threads - 1 : 0;
  s_->stop.store(false);
  for (int i = 0; i < workers_; ++i) s_->threads.emplace_back([st = s_] { st->worker(); });
}

void Pool::stop_workers() {
  s_->stop.store(true);
  {
    std::lock_guard<std::mutex> lk(s_->sleep_mtx);
    s_->wake.notify_all();
  }
  for (auto& t : s_->threads) t.join();
  s_->threads.clear();
  workers_ = 0;
}

void Pool::resize(int threads) {
  std::lock_guard<std::mutex> guard(s_->run_mtx);
  stop_workers();
  // Workers start from generation 0 again, so the work word starts there too.
  s_->work.store(0);
  start(threads > 0 ? threads : default_threads());
}

void Pool::run(int n, Task task, void* ctx) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> guard(s_->run_mtx, std::try_to_lock);
  if (n == 1 || workers_ == 0 || !guard.owns_lock()) {
    for (int i = 0; i < n; ++i) task(ctx, i);
    return;
  }
  State& s = *s_;
  s.task = task;
  s.ctx = ctx;
  s.done.store(0, std::memory_order_relaxed);
  uint32_t gen = (gen_of(s.work.load(std::memory_order_relaxed)) + 1) & kGenMask;
  if (gen == 0) gen = 1;
  s.work.store(((uint64_t)gen << (2 * kIdxBits)) | ((uint64_t)n << kIdxBits), std::memory_order_seq_cst);
  if (s.sleepers.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lk(s.sleep_mtx);
    s.wake.notify_all();
  }
  s.drain(gen);
  int spins = 0;
  while (s.done.load(std::memory_order_acquire) < n) {
    SQN_RELAX();
    if (++spins % kYieldEvery == 0) std::this_thread::yield();  // a worker was preempted mid-task
  }
}

}  // namespace sqn
