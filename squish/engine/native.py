"""The native CPU kernels hook (issue 8, docs/native.md).

On the CPU backend, `prepare` swaps the loaded model's quantized layers for squish_native's
kernels and returns the kernel path that ModelInfo.kernels reports: "cpu-native avx512",
"cpu-native avx2", "cpu-native scalar", or "cpu-reference" (stock MLX: the module is missing,
disabled with SQUISH_NATIVE=off, or the model has nothing it covers). Metal and CUDA keep
stock MLX and report "metal" / "cuda"; they never import squish_native.
"""

import logging

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from .memory import backend_name

log = logging.getLogger("squish.engine.native")

HINT = (
    "native CPU kernels unavailable ({reason}); running on stock MLX, about 10x slower. "
    "Install a C++ compiler and Python headers (e.g. apt-get install g++ python3-dev), "
    "then run: uv sync --reinstall-package squish-native"
)
SUPPORTED_BITS = (4, 8)
SUPPORTED_GROUPS = (32, 64, 128)
_hinted = False


def kernels_module():
    """(squish_native, "") when its compiled module is importable and enabled, else (None, why)."""
    try:
        import squish_native
    except ImportError:
        return None, "the squish-native package is not installed"
    if not squish_native.available():
        return None, squish_native.reason
    return squish_native, ""


def hint_once(reason: str) -> None:
    global _hinted
    if not _hinted:
        _hinted = True
        log.warning(HINT.format(reason=reason))


def covered(layer) -> bool:
    return (
        getattr(layer, "mode", "affine") == "affine"
        and layer.bits in SUPPORTED_BITS
        and layer.group_size in SUPPORTED_GROUPS
        and layer.weight.ndim == 2
    )


class NativeQuantizedLinear(nn.Module):
    """nn.QuantizedLinear on squish_native's kernel; float32 inputs only, others stay stock."""

    def __init__(self, layer: nn.QuantizedLinear, native):
        super().__init__()
        self.weight, self.scales, self.biases = layer.weight, layer.scales, layer.biases
        if "bias" in layer:
            self.bias = layer.bias.astype(mx.float32)
        self.group_size, self.bits = layer.group_size, layer.bits
        self._native = native
        self.freeze()

    def __call__(self, x):
        bias = self.get("bias")
        if x.dtype == mx.float32:
            return self._native.quantized_matmul(
                x, self.weight, self.scales, self.biases, self.group_size, self.bits, bias=bias
            )
        y = mx.quantized_matmul(
            x, self.weight, self.scales, self.biases, transpose=True, group_size=self.group_size, bits=self.bits
        )
        return y + bias.astype(y.dtype) if bias is not None else y


class NativeQuantizedEmbedding(nn.QuantizedEmbedding):
    """nn.QuantizedEmbedding whose as_linear (tied output head) runs on the native kernel."""

    def __init__(self, layer: nn.QuantizedEmbedding, native):
        nn.Module.__init__(self)
        self.weight, self.scales, self.biases = layer.weight, layer.scales, layer.biases
        self.group_size, self.bits = layer.group_size, layer.bits
        self.mode = getattr(layer, "mode", "affine")
        self.num_embeddings, self.dims = layer.num_embeddings, layer.dims
        self._native = native
        self.freeze()

    def as_linear(self, x):
        if x.dtype != mx.float32:
            return super().as_linear(x)
        return self._native.quantized_matmul(x, self.weight, self.scales, self.biases, self.group_size, self.bits)


def swap_quantized(model: nn.Module, native) -> int:
    """Replace every covered quantized layer in place; returns how many were replaced."""
    swaps = []
    for name, module in model.named_modules():
        if type(module) is nn.QuantizedLinear and covered(module):
            swaps.append((name, NativeQuantizedLinear(module, native)))
        elif type(module) is nn.QuantizedEmbedding and covered(module):
            swaps.append((name, NativeQuantizedEmbedding(module, native)))
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    return len(swaps)


def prepare(model: nn.Module) -> str:
    """Put the loaded model on the fastest kernels this machine has; returns the kernel path."""
    backend = backend_name()
    if backend != "CPU":
        return backend.lower()
    native, reason = kernels_module()
    if native is None:
        hint_once(reason)
        return "cpu-reference"
    if swap_quantized(model, native) == 0:
        return "cpu-reference"
    return f"cpu-native {native.isa()}"
