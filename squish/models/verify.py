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
