"""The model catalog: Ollama-style ids mapped to mlx-community repos, and size and RAM estimates.

`qwen2.5:1.5b` is the 4-bit build (the production baseline); `qwen2.5:1.5b-8bit` and
`qwen2.5:1.5b-3bit` pick the other builds, 3-bit labelled experimental. `smollm2:135m` is the
embedded model: it ships inside squish and needs no download.

Nothing here touches the network. Offline sizes are estimates from the parameter count and the
quantization layout (mlx-lm affine quantization: `bits` per weight plus a float16 scale and bias
per group of 64 weights); `squish pull --dry-run` reads the real sizes from the hub.
"""

import re
from dataclasses import dataclass

from ..engine.memory import GB

EMBEDDED_NAME = "smollm2:135m"  # shipped inside squish (squish.models.store imports it)
DEFAULT_BITS = 4
BITS = (3, 4, 8)
EXPERIMENTAL_BITS = (3,)
GROUP_SIZE = 64
# The conversation length RAM estimates assume: a long chat, not the model's whole window.
DEFAULT_CONTEXT = 4096
KV_BYTES = 2  # float16 keys and values
# Activations, the tokenizer, Python and the MLX runtime: measured RSS before a load is < 0.2 GB.
RUNTIME_OVERHEAD_BYTES = 300_000_000


@dataclass(frozen=True)
class Base:
    """One model family and size, with the architecture numbers the KV-cache estimate needs."""

    id: str
    repo_stem: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    context: int


# Architecture numbers are the models' config.json values.
BASES = (
    Base("qwen3:0.6b", "mlx-community/Qwen3-0.6B", 0.60, 28, 8, 128, 40960),
    Base("qwen3:1.7b", "mlx-community/Qwen3-1.7B", 1.72, 28, 8, 128, 40960),
    Base("qwen3:4b", "mlx-community/Qwen3-4B", 4.02, 36, 8, 128, 40960),
    Base("qwen3:8b", "mlx-community/Qwen3-8B", 8.19, 36, 8, 128, 40960),
    Base("qwen2.5:0.5b", "mlx-community/Qwen2.5-0.5B-Instruct", 0.49, 24, 2, 64, 32768),
    Base("qwen2.5:1.5b", "mlx-community/Qwen2.5-1.5B-Instruct", 1.54, 28, 2, 128, 32768),
    Base("qwen2.5:3b", "mlx-community/Qwen2.5-3B-Instruct", 3.09, 36, 2, 128, 32768),
    Base("qwen2.5:7b", "mlx-community/Qwen2.5-7B-Instruct", 7.62, 28, 4, 128, 32768),
    Base("llama3.2:1b", "mlx-community/Llama-3.2-1B-Instruct", 1.24, 16, 8, 64, 131072),
    Base("llama3.2:3b", "mlx-community/Llama-3.2-3B-Instruct", 3.21, 28, 8, 128, 131072),
    Base("smollm2:135m", "mlx-community/SmolLM2-135M-Instruct", 0.135, 30, 3, 64, 8192),
    Base("smollm2:360m", "mlx-community/SmolLM2-360M-Instruct", 0.362, 32, 5, 64, 8192),
    Base("smollm2:1.7b", "mlx-community/SmolLM2-1.7B-Instruct", 1.71, 24, 32, 64, 8192),
)
# The embedded GGUF (Q4_1) imported into MLX format.
EMBEDDED_SIZE_BYTES = 98_000_000

ID_PATTERN = re.compile(r"^(?P<base>[a-z0-9][a-z0-9.]*:[a-z0-9.]+?)(?:-(?P<bits>\d+)bit)?$")


@dataclass(frozen=True)
class RamEstimate:
    weights_bytes: int
    kv_bytes: int
    context: int
    overhead_bytes: int = RUNTIME_OVERHEAD_BYTES

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    def describe(self) -> str:
        return (
            f"~{self.total_bytes / GB:.2f} GB (weights {self.weights_bytes / GB:.2f} + KV cache "
            f"{self.kv_bytes / GB:.2f} at {self.context} tokens + runtime {self.overhead_bytes / GB:.2f})"
        )


@dataclass(frozen=True)
class CatalogModel:
    id: str
    base: Base
    bits: int

    @property
    def repo(self) -> str:
        return f"{self.base.repo_stem}-{self.bits}bit"

    @property
    def embedded(self) -> bool:
        return self.id == EMBEDDED_NAME

    @property
    def experimental(self) -> bool:
        return self.bits in EXPERIMENTAL_BITS

    @property
    def size_bytes(self) -> int:
        """Estimated download size (the embedded model: its real size)."""
        if self.embedded:
            return EMBEDDED_SIZE_BYTES
        bits_per_weight = self.bits + 2 * 16 / GROUP_SIZE
        return int(self.base.params_b * 1e9 * bits_per_weight / 8)

    def ram(self, context: int = DEFAULT_CONTEXT) -> RamEstimate:
        context = min(context, self.base.context)
        kv = kv_cache_bytes(self.base.layers, self.base.kv_heads, self.base.head_dim, context)
        return RamEstimate(self.size_bytes, kv, context)

    @property
    def label(self) -> str:
        if self.embedded:
            return "embedded"
        return f"{self.bits}-bit" + (" experimental" if self.experimental else "")


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int) -> int:
    """Keys and values for `context` tokens in every layer, float16."""
    return 2 * layers * kv_heads * head_dim * KV_BYTES * context


def config_value(config: dict, key: str, default=None):
    """A config field, also when it sits in `text_config` (multimodal configs)."""
    value = config.get(key)
    if value is None:
        value = config.get("text_config", {}).get(key)
    return default if value is None else value


def estimate_from_config(config: dict, weights_bytes: int, context: int = DEFAULT_CONTEXT) -> RamEstimate:
    """RAM for a model from its config.json and the size of its weights."""
    layers = int(config_value(config, "num_hidden_layers", 0))
    heads = int(config_value(config, "num_attention_heads", 1))
    kv_heads = int(config_value(config, "num_key_value_heads", heads))
    hidden = int(config_value(config, "hidden_size", 0))
    head_dim = int(config_value(config, "head_dim", hidden // max(heads, 1)))
    window = config_value(config, "max_position_embeddings")
    if window:
        context = min(context, int(window))
    return RamEstimate(weights_bytes, kv_cache_bytes(layers, kv_heads, head_dim, context), context)


def find(name: str) -> CatalogModel | None:
    """The catalog entry for an id such as `qwen3:8b` or `qwen3:8b-3bit`; None when it is not one."""
    match = ID_PATTERN.match(name.strip().lower())
    if match is None:
        return None
    base = next((b for b in BASES if b.id == match["base"]), None)
    if base is None:
        return None
    bits = int(match["bits"]) if match["bits"] else DEFAULT_BITS
    if bits not in BITS:
        return None
    return CatalogModel(base.id if bits == DEFAULT_BITS else f"{base.id}-{bits}bit", base, bits)


def looks_like_catalog_id(name: str) -> bool:
    """`family:tag` without a slash: the user meant a catalog id, known or not."""
    return ":" in name and "/" not in name


def by_repo(repo: str) -> CatalogModel | None:
    """The catalog entry whose mlx-community repo is `repo`, if any."""
    for model in entries(all_variants=True):
        if model.repo.lower() == repo.lower():
            return model
    return None


def entries(all_variants: bool = False) -> list[CatalogModel]:
    """The catalog: 4-bit builds, or every build when `all_variants`."""
    bits = BITS if all_variants else (DEFAULT_BITS,)
    models = []
    for base in BASES:
        for b in bits:
            model = find(base.id if b == DEFAULT_BITS else f"{base.id}-{b}bit")
            if model is not None:
                models.append(model)
    return models


def known_ids() -> str:
    return ", ".join(base.id for base in BASES)
