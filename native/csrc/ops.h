// MLX operations backed by squish's CPU kernels. Each builds a graph node whose eval_cpu runs
// the kernels on MLX's stream thread, split over the pool (pool.h).
#pragma once

#include <optional>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace sqn {

namespace mx = mlx::core;

// x @ dequantize(w).T for MLX's affine layout (transpose=True), x float32 (..., K);
// optional bias (N,) and residual (..., N) are added to the result. `precise` quantizes x into
// two int8 passes (the second holds what the first rounded away) instead of one.
mx::array quantized_matmul(const mx::array& x, const mx::array& w, const mx::array& scales,
                           const mx::array& biases, int group_size, int bits,
                           const std::optional<mx::array>& bias = std::nullopt,
                           const std::optional<mx::array>& residual = std::nullopt,
                           bool precise = true, mx::StreamOrDevice s = {});

// Copies a float32 array of any layout into dst, row-major.
void copy_strided(const mx::array& a, float* dst);

}  // namespace sqn
