// Optional phase timers (SQUISH_NATIVE_PROFILE=1, read once at load): wall time and the
// calling thread's CPU time per phase of the native ops, read with squish_native.profile().
// Wall well above CPU time means the thread was descheduled (a loaded machine, or the Python
// thread building the next step on the same core). Off, each scope costs a load and a branch.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace sqn {

// Phases of decoder_layer, then any standalone quantized_matmul (the output head).
enum Phase : int { kPhNorm, kPhQKV, kPhRope, kPhAttn, kPhO, kPhGU, kPhAct, kPhDown, kPhMatmul, kPhases };

extern const bool g_profiling;
void prof_add(int phase, int64_t wall_ns, int64_t cpu_ns);

// (phase, wall ns, thread CPU ns, calls) per phase since the last reset; reset clears them.
std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> profile(bool reset);

inline int64_t now_ns(clockid_t c) {
  timespec t;
  clock_gettime(c, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

struct ProfScope {
  int phase;
  int64_t w0 = 0, c0 = 0;
  explicit ProfScope(int p) : phase(p) {
    if (g_profiling) {
      w0 = now_ns(CLOCK_MONOTONIC);
      c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    }
  }
  ~ProfScope() {
    if (g_profiling) prof_add(phase, now_ns(CLOCK_MONOTONIC) - w0, now_ns(CLOCK_THREAD_CPUTIME_ID) - c0);
  }
};

}  // namespace sqn
