// One persistent pool of worker threads for every kernel: the calling thread (MLX's stream
// thread) takes tasks too, workers claim tasks from one atomic word, and wait by spinning for
// a short while before they sleep, so the many small parallel regions of a decode step do not
// pay a wake-up each. See docs/native.md.
#pragma once

#include <cstdint>

namespace sqn {

class Pool {
 public:
  using Task = void (*)(void* ctx, int index);

  // The process-wide pool (created on first use, never destroyed: workers never block exit).
  static Pool& get();

  // Total threads, the caller included.
  int threads() const {
    return workers_ + 1;
  }

  // Runs task(ctx, i) for every i in [0, n) and returns when all have finished. A second
  // caller arriving while the pool is busy runs its tasks by itself.
  void run(int n, Task task, void* ctx);

  template <class F>
  void parallel_for(int n, F&& f) {
    run(n, [](void* c, int i) { (*static_cast<F*>(c))(i); }, &f);
  }

  // Changes the number of threads (tests and benchmarks); 0 restores the default.
  void resize(int threads);

 private:
  Pool();
  void start(int threads);
  void stop_workers();
  struct State;
  State* s_;
  int workers_ = 0;
};

}  // namespace sqn
