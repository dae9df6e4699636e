"""The native CPU kernels hook (issue 8, docs/native.md).

On the CPU backend, `prepare` puts the loaded model on squish_native's kernels: each decoder
layer of a llama-family model (llama, qwen2, qwen3) becomes one native primitive over the
loaded weights (`NativeBlock`), and every other quantized layer it covers runs the native
matmul. It returns the kernel path that ModelInfo.kernels reports: "cpu-native avx512",
"cpu-native avx2", "cpu-native scalar", or "cpu-reference" (stock MLX: the module is missing,
disabled with SQUISH_NATIVE=off, or the model has nothing it covers). Metal and CUDA keep
stock MLX and report "metal" / "cuda"; they never import squish_native.
"""

import logging

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.models.cache import KVCache

from .memory import backend_name

log = logging.getLogger("squish.engine.native")

HINT = (
    "native CPU kernels unavailable ({reason}); running on stock MLX, about 10x slower. "
    "Install a C++ compiler and Python headers (e.g. apt-get install g++ python3-dev), "
    "then run: uv sync --reinstall-package squish-native"
)
SUPPORTED_BITS = (4, 8)
SUPPORTED_GROUPS = (32, 64, 128)
EVAL_EACH_LAYER_ROWS = 64  # a prefill chunk: one sync per layer is nothing beside its compute
_hinted = False


def kernels_module():
    """(squish_native, "") when its compiled module is importable and enabled, else (None, why)."""
    try:
        import squish_native
    except ImportError:
        return None, "the squish-native package is not installed"
    if not squish_native.AVAILABLE:
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


class NativeRMSNorm(nn.Module):
    """nn.RMSNorm as one native node (stock MLX composes it from several on the CPU)."""

    def __init__(self, layer: nn.RMSNorm, native):
        super().__init__()
        self.weight = layer.weight.astype(mx.float32)
        self.eps = layer.eps
        self._native = native
        self.freeze()

    def __call__(self, x):
        if x.dtype != mx.float32:
            return mx.fast.rms_norm(x, self.weight.astype(x.dtype), self.eps)
        return self._native.rms_norm(x, self.weight, self.eps)


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


def swap_norms(model: nn.Module, native) -> None:
    swaps = [(name, NativeRMSNorm(m, native)) for name, m in model.named_modules() if type(m) is nn.RMSNorm]
    if swaps:
        model.update_modules(tree_unflatten(swaps))


LLAMA_FAMILY = ("llama", "qwen2", "qwen3")


def _quantized(*layers, biases: bool = False) -> bool:
    """Covered quantized linears, sharing bits, group size, scale dtype and having biases or not."""
    first = layers[0]
    return all(
        type(q) is nn.QuantizedLinear
        and covered(q)
        and ("bias" in q) == biases
        and (q.bits, q.group_size, q.scales.dtype) == (first.bits, first.group_size, first.scales.dtype)
        for q in layers
    )


def block_plan(model_type: str, block) -> dict | None:
    """The LayerSpec fields for one mlx-lm decoder block, or None when the layer primitive does not cover it."""
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    norms = (getattr(block, "input_layernorm", None), getattr(block, "post_attention_layernorm", None))
    if model_type not in LLAMA_FAMILY or attn is None or mlp is None or getattr(block, "use_sliding", False):
        return None
    if any(type(n) is not nn.RMSNorm for n in norms) or type(getattr(attn, "rope", None)) is not nn.RoPE:
        return None
    projections = [getattr(attn, f"{n}_proj", None) for n in "qkvo"]
    ffn = [getattr(mlp, f"{n}_proj", None) for n in ("gate", "up", "down")]
    if any(p is None for p in projections + ffn):
        return None
    q, k, v, o = projections
    qkv_bias = "bias" in q  # qwen2: biases on q, k and v only
    if not (_quantized(q, k, v, biases=qkv_bias) and _quantized(o) and _quantized(*ffn[:2]) and _quantized(ffn[2])):
        return None
    qk_norm = model_type == "qwen3"
    if qk_norm and not all(type(getattr(attn, n, None)) is nn.RMSNorm for n in ("q_norm", "k_norm")):
        return None
    heads, kv_heads = attn.n_heads, attn.n_kv_heads
    head_dim = q.weight.shape[0] // heads
    rope = attn.rope
    return dict(
        dims=o.weight.shape[0],
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden=ffn[0].weight.shape[0],
        rope_dims=rope.dims,
        rope_traditional=bool(rope.traditional),
        rope_base=float(rope.base),
        rope_scale=float(rope.scale),
        eps=float(norms[0].eps),
        attn_scale=float(attn.scale),
        qk_norm=qk_norm,
        qkv_bias=qkv_bias,
        qkv_bits=q.bits, qkv_group=q.group_size,
        o_bits=o.bits, o_group=o.group_size,
        gu_bits=ffn[0].bits, gu_group=ffn[0].group_size,
        down_bits=ffn[2].bits, down_group=ffn[2].group_size,
    )


def block_weights(block, plan: dict) -> list:
    """The decoder_layer weight list for one block: the loaded arrays themselves, nothing merged
    or converted (f16 scales are read with F16C; q/k/v and gate/up share one parallel region
    inside the node), so loading stays a memory map. Only the small norms and q/k/v biases are
    made float32."""
    attn, mlp = block.self_attn, block.mlp
    f32 = lambda a: a.astype(mx.float32)  # noqa: E731
    packed = lambda q: [q.weight, q.scales, q.biases]  # noqa: E731
    weights = [f32(block.input_layernorm.weight), *packed(attn.q_proj), *packed(attn.k_proj), *packed(attn.v_proj)]
    if plan["qkv_bias"]:
        weights.append(f32(mx.concatenate([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])))
    if plan["qk_norm"]:
        weights += [f32(attn.q_norm.weight), f32(attn.k_norm.weight)]
    weights += packed(attn.o_proj)
    weights.append(f32(block.post_attention_layernorm.weight))
    weights += packed(mlp.gate_proj) + packed(mlp.up_proj) + packed(mlp.down_proj)
    return weights


class NativeBlock(nn.Module):
    """A llama-family decoder block as one squish_native.decoder_layer node.

    Called like mlx-lm's TransformerBlock: (x, mask, cache). The cache is mlx-lm's KVCache (or
    None): its keys/values are replaced by the node's outputs, which share their buffers, and its
    offset advances by the tokens fed, so trim, state and save/load work unchanged. Batch 1 and
    causal masks only, which is all squish's engine asks for.
    """

    def __init__(self, weights: list, plan: dict, native):
        super().__init__()
        self.weights = weights
        self._plan = plan
        self._spec = native.layer_spec(**plan)
        self._native = native
        self.use_sliding = False  # mlx-lm's llama model picks each layer's mask by this
        self.freeze()

    def __call__(self, x, mask=None, cache=None):
        if x.shape[0] != 1 or not (mask is None or isinstance(mask, str)):
            raise ValueError("squish's native decoder layer runs batch 1 with causal masks only")
        if cache is not None and type(cache) is not KVCache:
            raise ValueError(f"squish's native decoder layer needs mlx-lm's KVCache, not {type(cache).__name__}")
        if cache is None or cache.keys is None:
            keys = values = mx.zeros((1, self._plan["kv_heads"], 0, self._plan["head_dim"]), dtype=mx.float32)
            offset = 0
        else:
            keys, values, offset = cache.keys, cache.values, cache.offset
            if keys.dtype != mx.float32:
                keys, values = keys.astype(mx.float32), values.astype(mx.float32)
        x = x if x.dtype == mx.float32 else x.astype(mx.float32)
        rows, capacity = x.shape[1], keys.shape[2]
        out, keys, values = self._native.decoder_layer(x, self.weights, keys, values, offset, self._spec)
        if cache is not None:
            cache.keys, cache.values = keys, values
            cache.offset = offset + rows
        if rows >= EVAL_EACH_LAYER_ROWS or offset + rows > capacity:
            # MLX allocates a node's outputs when it schedules the node, long before the node
            # runs, so an unevaluated pass of 30 such nodes holds 30 (rows, dims) activations,
            # and a pass that grows every cache holds every old buffer beside every new one.
            # Evaluating a prefill chunk or a growing pass one layer at a time holds one layer's.
            mx.eval(out, keys, values)
        return out


def swap_blocks(model: nn.Module, native) -> int:
    """Replace every covered decoder block of a llama-family model; returns how many."""
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    model_type = getattr(getattr(model, "args", None), "model_type", None)
    if not blocks:
        return 0
    plans = [block_plan(model_type, b) for b in blocks]
    if any(p is None for p in plans):  # all or nothing: mixed blocks would need two cache kinds
        return 0
    for i, (block, plan) in enumerate(zip(blocks, plans)):
        blocks[i] = NativeBlock(block_weights(block, plan), plan, native)
    return len(blocks)


def prepare(model: nn.Module) -> str:
    """Put the loaded model on the fastest kernels this machine has; returns the kernel path."""
    backend = backend_name()
    if backend != "CPU":
        return backend.lower()
    native, reason = kernels_module()
    if native is None:
        hint_once(reason)
        return "cpu-reference"
    blocks = swap_blocks(model, native)
    if swap_quantized(model, native) == 0 and blocks == 0:
        return "cpu-reference"  # a float model: stock MLX's matmuls, nothing to gain here
    swap_norms(model, native)
    return f"cpu-native {native.isa()}"
