"""squish's native CPU kernels for MLX (see docs/native.md).

`AVAILABLE` says whether the compiled module is here (and `reason`, when not, why); without it (no C++ compiler or Python
headers when the package was built, or SQUISH_NATIVE=off) every caller keeps stock MLX.
"""

import os

_OFF = os.environ.get("SQUISH_NATIVE", "").strip().lower() in ("0", "off", "false", "no")

if _OFF:
    _ext = None
    reason = "disabled by SQUISH_NATIVE=off"
else:
    try:
        import mlx.core  # noqa: F401  (registers MLX's types with nanobind before the extension loads)

        from . import _ext
    except ImportError as exc:
        _ext = None
        reason = f"the native module is not built ({exc})"
    else:
        reason = ""

AVAILABLE = _ext is not None


def _require():
    if _ext is None:
        raise RuntimeError(f"squish_native is unavailable: {reason}")
    return _ext


def isa() -> str:
    """The kernel path in use: 'avx512', 'avx2' or 'scalar'."""
    return _require().isa()


def supported_isas() -> list[str]:
    return _require().supported_isas()


def set_isa(name: str) -> None:
    """Force a kernel path for this process ('auto' restores the best one)."""
    _require().set_isa(name)


def threads() -> int:
    return _require().threads()


def set_threads(n: int) -> None:
    _require().set_threads(n)


def quantized_matmul(x, w, scales, biases, group_size: int, bits: int, *, bias=None, residual=None, precise=True):
    """x @ dequantize(w).T for MLX's affine quantized layout; x float32 (..., K).

    x is quantized to int8 blocks of 32; `precise` (the default) adds a second int8 pass for
    what the first rounded away, which keeps outlier channels from costing accuracy.
    """
    return _require().quantized_matmul(
        x, w, scales, biases, group_size, bits, bias=bias, residual=residual, precise=precise
    )


def rms_norm(x, weight, eps: float):
    """mx.fast.rms_norm for float32 x over its last axis."""
    return _require().rms_norm(x, weight, eps)


def rope(x, dims: int, *, traditional: bool, base: float, scale: float = 1.0, offset: int = 0):
    """mx.fast.rope for float32 x (..., T, head_dim), positions offset + t."""
    return _require().rope(x, dims, traditional, base, scale, offset)


def attention(q, keys, values, kv_len: int, scale: float):
    """Causal attention of q (1, H, T, D) over the first kv_len cached positions (1, KV, S, D)."""
    return _require().attention(q, keys, values, kv_len, scale)


def swiglu(gate, up):
    """silu(gate) * up."""
    return _require().swiglu(gate, up)


def layer_spec(**fields):
    """A LayerSpec for decoder_layer, its fields set from keyword arguments."""
    spec = _require().LayerSpec()
    for name, value in fields.items():
        if not hasattr(spec, name):
            raise TypeError(f"LayerSpec has no field {name!r}")
        setattr(spec, name, value)
    return spec


def decoder_layer(x, weights, k_cache, v_cache, offset: int, spec):
    """One llama-family decoder layer; returns (x, keys, values). See docs/native.md."""
    return _require().decoder_layer(x, weights, k_cache, v_cache, offset, spec)


def profile(reset: bool = False) -> dict[str, tuple[int, int, int]]:
    """Phase timers, enabled by SQUISH_NATIVE_PROFILE=1 at import: {phase: (wall ns, CPU ns of
    the thread running the op, calls)} since the last reset; reset=True clears them after reading.
    Phases: decoder_layer's norm, qkv, rope, attention, o, gate_up, swiglu, down, and matmul
    (standalone quantized_matmul calls, the output head)."""
    return {name: (wall, cpu, calls) for name, wall, cpu, calls in _require().profile(reset)}


def cache_copies() -> int:
    """How many decoder_layer calls wrote their caches into new buffers instead of in place."""
    return _require().cache_copies()
