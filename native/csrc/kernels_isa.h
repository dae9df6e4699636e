// What the per-ISA kernel files share (kernels_qmm.cpp, kernels_float.cpp): included only where
// CMakeLists.txt compiles them once per instruction set, with SQ_ISA naming the namespace.
#pragma once

#include "common.h"

namespace sqn {
namespace SQ_ISA {

inline int imin(int a, int b) {
  return a < b ? a : b;
}

// Kernels::qmm and Kernels::quantize (common.h), defined in kernels_qmm.cpp.
void qmm(const QWeight& w, const QAct& x, int m0, int m1, int n0, int n1, float* y, int64_t ldy,
         const float* bias, const float* res, int64_t ldr);
void quantize(const float* x, int64_t ldx, int m0, int m1, const QAct& a);

}  // namespace SQ_ISA
}  // namespace sqn
