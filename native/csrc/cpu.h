// Which kernels run: the best the CPU supports, or a path forced by SQUISH_NATIVE_ISA (read
// once at import) or by set_isa() (tests).
#pragma once

#include <string>
#include <vector>

#include "common.h"

namespace sqn {

// The kernel table in use.
const Kernels& kernels();
// Names of the paths this CPU can run, best first ("avx512", "avx2", "scalar").
std::vector<std::string> supported_isas();
// Force a path ("auto" = the best); throws std::invalid_argument for an unknown or
// unsupported name.
void set_isa(const std::string& name);

}  // namespace sqn
