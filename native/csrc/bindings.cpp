#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "cpu.h"
#include "ops.h"
#include "pool.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_ext, m) {
  m.doc() = "squish's native CPU kernels for MLX";

  m.def("isa", [] { return std::string(sqn::kernels().name); }, "The kernel path in use.");
  m.def("supported_isas", &sqn::supported_isas, "Kernel paths this CPU can run, best first.");
  m.def("set_isa", &sqn::set_isa, "name"_a, "Force a kernel path ('auto' for the best).");
  m.def("threads", [] { return sqn::Pool::get().threads(); }, "Threads the kernels use.");
  m.def("set_threads", [](int n) { sqn::Pool::get().resize(n); }, "n"_a,
        "Set the number of kernel threads (0: one per CPU this process may use).");

  m.def("quantized_matmul", &sqn::quantized_matmul, "x"_a, "w"_a, "scales"_a, "biases"_a,
        "group_size"_a, "bits"_a, nb::kw_only(), "bias"_a = nb::none(), "residual"_a = nb::none(),
        "precise"_a = true, "stream"_a = nb::none(),
        "x @ dequantize(w).T in MLX's affine layout, x float32; optional bias (N,) and residual.");
}
