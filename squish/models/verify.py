"""Model directory checks that need no MLX: config sanity, safetensors headers, a tokenizer.

They run before a model is listed as pulled or handed to the engine; the engine then checks
what needs MLX (squish.engine.loader: mlx-lm builds it, no NaN/Inf weights).
"""

import json
import struct
from pathlib import Path

from ..errors import ModelError

REQUIRED_CONFIG = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


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
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} is not a JSON object")
    text = config.get("text_config", {})
    for key in REQUIRED_CONFIG:
        value = config.get(key, text.get(key))
        if value is None:
            raise ModelError(f"{config_path} lacks {key!r}")
        if key != "model_type" and (not isinstance(value, int) or value <= 0):
            raise ModelError(f"{config_path}: {key} must be a positive integer, got {value!r}")
    return config


def check_safetensors(path: Path) -> dict:
    """Parse the header and check that the file holds every byte the header promises; returns its metadata."""
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
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def verify_dir(model_dir: Path) -> dict:
    config = read_config(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"{model_dir} has no .safetensors weights")
    for path in weights:
        check_safetensors(path)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ModelError(f"{index} is invalid: {exc}") from None
        missing = sorted(s for s in shards if not (model_dir / s).is_file())
        if missing:
            raise ModelError(f"{model_dir}: the weight index names missing shards {', '.join(missing)}")
    if not any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ModelError(f"{model_dir} has no tokenizer (tokenizer.json)")
    return config


def is_mlx_layout(model_dir: Path, config: dict) -> bool:
    """Weights saved by MLX (mlx_lm.convert writes `format: mlx` into the safetensors header) or
    quantized by it: what mlx_lm loads as it is. PyTorch-layout repos need a conversion first."""
    if "quantization" in config:
        return True
    first = min(model_dir.glob("*.safetensors"), default=None)
    return first is not None and check_safetensors(first).get("format") == "mlx"
