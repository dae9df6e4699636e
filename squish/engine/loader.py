"""Verified model loading: a model directory is checked before and after mlx-lm loads it."""

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .errors import ModelError
from .metrics import backend_name

REQUIRED_CONFIG = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    model_type: str
    quantization: str
    context_length: int
    num_layers: int
    size_gb: float
    backend: str


def read_config(model_dir: Path) -> dict:
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist")
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{model_dir} is not a model: config.json is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_path} is not valid JSON: {exc}") from None
    text = config.get("text_config", {})
    for key in REQUIRED_CONFIG:
        value = config.get(key, text.get(key))
        if value is None:
            raise ModelError(f"{config_path} lacks {key!r}")
        if key != "model_type" and (not isinstance(value, int) or value <= 0):
            raise ModelError(f"{config_path}: {key} must be a positive integer, got {value!r}")
    return config


def check_safetensors(path: Path) -> None:
    """Parse the header and check that the file holds every byte the header promises."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"{path.name} is corrupt: {exc}") from None
    data_end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + data_end > size:
        raise ModelError(f"{path.name} is truncated: {size} bytes, the header needs {8 + header_len + data_end}")


def verify_dir(model_dir: Path) -> dict:
    config = read_config(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"{model_dir} has no .safetensors weights")
    for path in weights:
        check_safetensors(path)
    if not any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ModelError(f"{model_dir} has no tokenizer (tokenizer.json)")
    return config


def check_finite(model: nn.Module) -> None:
    """Raise if any floating-point parameter holds NaN or Inf (one fused pass over the weights)."""
    floats = [(name, p) for name, p in tree_flatten(model.parameters()) if mx.issubdtype(p.dtype, mx.floating)]
    flags = mx.stack([mx.all(mx.isfinite(p)) for _, p in floats])
    bad = [name for (name, _), ok in zip(floats, flags.tolist()) if not ok]
    if bad:
        raise ModelError(f"weights hold NaN or Inf values: {', '.join(bad[:3])}")


def describe_quantization(config: dict) -> str:
    quant = config.get("quantization") or config.get("quantization_config")
    if not quant or "bits" not in quant:
        return str(config.get("torch_dtype", "float16"))
    return f"Q{quant['bits']} g{quant.get('group_size', '?')}"


def load(name: str, model_dir: Path):
    """(model, tokenizer, ModelInfo) for a verified model directory. Call on the engine thread."""
    config = verify_dir(model_dir)
    from mlx_lm.utils import load as mlx_lm_load

    try:
        model, tokenizer = mlx_lm_load(str(model_dir))
    except Exception as exc:  # mlx-lm raises many kinds for a broken model; all mean the same here
        raise ModelError(f"cannot load {model_dir.name}: {type(exc).__name__}: {exc}") from None
    check_finite(model)
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    context = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    info = ModelInfo(
        name=name,
        path=str(model_dir),
        model_type=config["model_type"],
        quantization=describe_quantization(config),
        context_length=int(context or 4096),
        num_layers=int(config.get("num_hidden_layers") or config["text_config"]["num_hidden_layers"]),
        size_gb=size / 1e9,
        backend=backend_name(),
    )
    return model, tokenizer, info
