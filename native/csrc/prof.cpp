#include "prof.h"

#include <atomic>
#include <cstdlib>

namespace sqn {

namespace {

const char* const kNames[kPhases] = {"norm", "qkv", "rope", "attention", "o", "gate_up", "swiglu", "down", "matmul"};
std::atomic<int64_t> wall_[kPhases], cpu_[kPhases], calls_[kPhases];

bool profile_env() {
  const char* e = std::getenv("SQUISH_NATIVE_PROFILE");
  return e && *e && *e != '0';
}

}  // namespace

const bool g_profiling = profile_env();

void prof_add(int phase, int64_t wall_ns, int64_t cpu_ns) {
  wall_[phase].fetch_add(wall_ns, std::memory_order_relaxed);
  cpu_[phase].fetch_add(cpu_ns, std::memory_order_relaxed);
  calls_[phase].fetch_add(1, std::memory_order_relaxed);
}

std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> profile(bool reset) {
  std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> out;
  for (int i = 0; i < kPhases; ++i) {
    out.emplace_back(kNames[i], wall_[i].load(), cpu_[i].load(), calls_[i].load());
    if (reset) wall_[i] = cpu_[i] = calls_[i] = 0;
  }
  return out;
}

}  // namespace sqn
