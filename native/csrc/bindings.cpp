#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "cpu.h"
#include "fused.h"
#include "ops.h"
#include "pool.h"
#include "prof.h"

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

  m.def("rms_norm", &sqn::rms_norm, "x"_a, "weight"_a, "eps"_a, nb::kw_only(), "stream"_a = nb::none());
  m.def("rope", &sqn::rope, "x"_a, "dims"_a, "traditional"_a, "base"_a, "scale"_a, "offset"_a, nb::kw_only(),
        "stream"_a = nb::none());
  m.def("attention", &sqn::attention, "q"_a, "keys"_a, "values"_a, "kv_len"_a, "scale"_a, nb::kw_only(),
        "stream"_a = nb::none());
  m.def("swiglu", &sqn::swiglu, "gate"_a, "up"_a, nb::kw_only(), "stream"_a = nb::none());

  nb::class_<sqn::LayerSpec>(m, "LayerSpec")
      .def(nb::init<>())
      .def_rw("dims", &sqn::LayerSpec::dims)
      .def_rw("heads", &sqn::LayerSpec::heads)
      .def_rw("kv_heads", &sqn::LayerSpec::kv_heads)
      .def_rw("head_dim", &sqn::LayerSpec::head_dim)
      .def_rw("hidden", &sqn::LayerSpec::hidden)
      .def_rw("rope_dims", &sqn::LayerSpec::rope_dims)
      .def_rw("rope_traditional", &sqn::LayerSpec::rope_traditional)
      .def_rw("rope_base", &sqn::LayerSpec::rope_base)
      .def_rw("rope_scale", &sqn::LayerSpec::rope_scale)
      .def_rw("eps", &sqn::LayerSpec::eps)
      .def_rw("attn_scale", &sqn::LayerSpec::attn_scale)
      .def_rw("qk_norm", &sqn::LayerSpec::qk_norm)
      .def_rw("qkv_bias", &sqn::LayerSpec::qkv_bias)
      .def_rw("precise", &sqn::LayerSpec::precise)
      .def_rw("qkv_bits", &sqn::LayerSpec::qkv_bits)
      .def_rw("qkv_group", &sqn::LayerSpec::qkv_group)
      .def_rw("o_bits", &sqn::LayerSpec::o_bits)
      .def_rw("o_group", &sqn::LayerSpec::o_group)
      .def_rw("gu_bits", &sqn::LayerSpec::gu_bits)
      .def_rw("gu_group", &sqn::LayerSpec::gu_group)
      .def_rw("down_bits", &sqn::LayerSpec::down_bits)
      .def_rw("down_group", &sqn::LayerSpec::down_group);
  m.def("profile", &sqn::profile, "reset"_a = false,
        "Phase timers (SQUISH_NATIVE_PROFILE=1): (phase, wall ns, thread CPU ns, calls) each.");
  m.def("cache_copies", &sqn::cache_copies, "Cache writes that needed a new buffer.");
  m.def("decoder_layer", &sqn::decoder_layer, "x"_a, "weights"_a, "k_cache"_a, "v_cache"_a, "offset"_a, "spec"_a,
        nb::kw_only(), "stream"_a = nb::none(),
        "One llama-family decoder layer: returns (x, keys, values); see docs/native.md.");
}
