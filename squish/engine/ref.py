"""What a model is to the engine: a `ModelRef` that squish.models resolved a name to.

No MLX here: squish.models builds refs, the engine thread loads them (docs/architecture.md).
"""

from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "squish.json"  # written last into a model directory: the directory is complete


@dataclass(frozen=True)
class ModelRef:
    """A model the engine can load: what squish.models resolved a name to (docs/architecture.md).

    `path` is an MLX model directory, verified by squish.models. With `gguf` set (squish.models
    sets it while `path` holds no manifest), the engine first imports that GGUF file into `path`
    (it needs MLX, so it happens on the engine thread), with `manifest` as the directory's
    MANIFEST; the directory appears complete or not at all.
    """

    name: str
    path: Path
    gguf: Path | None = None
    manifest: dict = field(default_factory=dict)
