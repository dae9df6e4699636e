#include "cpu.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace sqn {
namespace {

struct Entry {
  const char* name;
  const Kernels* (*table)();
  bool (*supported)();
};

bool always() {
  return true;
}

#if defined(__x86_64__) || defined(_M_X64)
bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c");
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c");
}
#endif

const std::vector<Entry>& entries() {
  static const std::vector<Entry> all = {
#if defined(SQ_HAVE_avx512)
      {"avx512", avx512::kernels, has_avx512},
#endif
#if defined(SQ_HAVE_avx2)
      {"avx2", avx2::kernels, has_avx2},
#endif
      {"scalar", scalar::kernels, always},
  };
  return all;
}

const Kernels* pick(const std::string& name) {
  for (const auto& e : entries()) {
    if ((name == "auto" || name == e.name) && e.supported()) return e.table();
  }
  return nullptr;
}

std::atomic<const Kernels*>& current() {
  static std::atomic<const Kernels*> table = [] {
    const char* env = std::getenv("SQUISH_NATIVE_ISA");
    const Kernels* t = env && *env ? pick(env) : nullptr;
    return t ? t : pick("auto");
  }();
  return table;
}

}  // namespace

const Kernels& kernels() {
  return *current().load(std::memory_order_acquire);
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const auto& e : entries()) {
    if (e.supported()) names.push_back(e.name);
  }
  return names;
}

void set_isa(const std::string& name) {
  const Kernels* t = pick(name);
  if (!t) throw std::invalid_argument("squish_native: kernel path '" + name + "' is not available on this CPU");
  current().store(t, std::memory_order_release);
}

}  // namespace sqn
