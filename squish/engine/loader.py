"""Model loading on the engine thread: mlx-lm builds the model, then every weight is checked.

The directory was verified before it got here (squish.models.verify: config, safetensors
headers, tokenizer); what needs MLX is checked here: mlx-lm must build the model from it, and
no floating-point weight may hold NaN or Inf.
"""

import hashlib
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..errors import ModelError
from . import native
from .events import ModelInfo, describe_quantization
from .memory import GB, backend_name
from .toolformat import tool_format


def check_finite(model: nn.Module) -> None:
    """Raise if any floating-point parameter holds NaN or Inf (one fused pass over the weights)."""
    floats = [(name, p) for name, p in tree_flatten(model.parameters()) if mx.issubdtype(p.dtype, mx.floating)]
    flags = mx.stack([mx.all(mx.isfinite(p)) for _, p in floats])
    bad = [name for (name, _), ok in zip(floats, flags.tolist()) if not ok]
    if bad:
        raise ModelError(f"weights hold NaN or Inf values: {', '.join(bad[:3])}")


def identity(model_dir: Path) -> str:
    """A fingerprint of the model's config and weights files (name, size, mtime, safetensors
    header): a saved KV cache is used only by the model that computed it. Reads headers only.
    The manifest is left out (squish rewrites it on every load); a changed tokenizer or template
    shows up as different tokens, which the KV cache's token list catches."""
    digest = hashlib.sha256()
    for path in [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))]:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        with path.open("rb") as handle:
            if path.suffix == ".safetensors":
                (length,) = struct.unpack("<Q", handle.read(8))
                digest.update(handle.read(min(length, 100_000_000)))
            else:
                digest.update(handle.read())
    return digest.hexdigest()[:32]


def load(name: str, model_dir: Path):
    """(model, tokenizer, ModelInfo) for a verified model directory. Call on the engine thread."""
    from mlx_lm.utils import load as mlx_lm_load

    try:
        model, tokenizer, config = mlx_lm_load(str(model_dir), return_config=True)
    except Exception as exc:  # mlx-lm raises many kinds for a broken model; all mean the same here
        raise ModelError(f"cannot load {model_dir.name}: {type(exc).__name__}: {exc}") from None
    check_finite(model)
    kernels = native.prepare(model)
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    template = getattr(tokenizer, "chat_template", None) or ""
    template = template if isinstance(template, str) else str(template)
    text = config.get("text_config", {})
    context = config.get("max_position_embeddings") or text.get("max_position_embeddings")
    info = ModelInfo(
        name=name,
        path=str(model_dir),
        model_type=config["model_type"],
        quantization=describe_quantization(config),
        context_length=int(context or 4096),
        num_layers=int(config.get("num_hidden_layers") or text["num_hidden_layers"]),
        size_gb=size / GB,
        backend=backend_name(),
        kernels=kernels,
        identity=identity(model_dir),
        thinking=bool(getattr(tokenizer, "has_thinking", False)) or "<think>" in template,
        thinking_switch="enable_thinking" in template,
        tool_format=tool_format(tokenizer),
    )
    return model, tokenizer, info
