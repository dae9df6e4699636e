"""Helpers shared by test modules (import them with `from helpers import ...`)."""

import json
import os
import sys
from pathlib import Path

from squish.models import store


def import_embedded(home: Path | None = None) -> Path:
    """The embedded model's directory in `home`, imported first if needed (MLX on this thread)."""
    from squish.engine.gguf import import_model

    ref = store.resolve(None, home)
    if ref.gguf is not None:
        import_model(ref)
    return ref.path


TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
# A hybrid model (mlx-lm's lfm2): its first layer is a short convolution whose cache is an
# ArraysCache (no `offset`), the second is attention with a KVCache.
TINY_HYBRID = {
    "model_type": "lfm2",
    "vocab_size": 49152,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "norm_eps": 1e-5,
    "conv_bias": False,
    "conv_L_cache": 3,
    "block_dim": 64,
    "block_ff_dim": 128,
    "block_multiple_of": 32,
    "block_ffn_dim_multiplier": 1.0,
    "block_auto_adjust_ff_dim": False,
    "layer_types": ["conv", "full_attention"],
    "tie_embedding": True,
}


def build_tiny_model(
    path: Path, home: Path, seed: int = 0, scale: float = 1.0, dtype: str = "float32", config: dict = TINY_LLAMA
) -> Path:
    """A 2-layer model with random weights and the embedded model's tokenizer: fast and real."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    weights = {k: (v * scale).astype(getattr(mx, dtype)) for k, v in tree_flatten(model.parameters())}
    path.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    (path / "config.json").write_text(json.dumps(config))
    embedded = import_embedded(home)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((embedded / name).read_bytes())
    return path


def squish_env(home: Path) -> dict:
    return {**os.environ, "SQUISH_HOME": str(home), "PYTHONIOENCODING": "utf-8"}


SQUISH = [sys.executable, "-m", "squish"]
