"""What the /model picker lists. One function, so the catalog can join it later."""

from dataclasses import dataclass

from ..engine import store


@dataclass(frozen=True)
class ModelChoice:
    name: str  # shown, and stored with the chat
    target: str  # what engine.load() takes: the name, or the directory when the name does not resolve to it
    detail: str  # one line shown under the name


def local_models() -> list[ModelChoice]:
    """Ready local models (their manifest written), the embedded one always first."""
    choices = [
        ModelChoice(store.EMBEDDED_NAME, store.EMBEDDED_NAME, "embedded SmolLM2-135M-Instruct (Q4), always available")
    ]
    models_dir = store.models_dir()
    if not models_dir.is_dir():
        return choices
    for model_dir in sorted(models_dir.iterdir()):
        manifest = store.read_manifest(model_dir)
        if manifest is None or model_dir.name == store.EMBEDDED_DIR:
            continue
        size = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
        name = manifest.get("name") or model_dir.name
        target = name if store.local_dir_name(name) == model_dir.name else str(model_dir)
        choices.append(ModelChoice(name, target, f"{size / 1e9:.2f} GB on disk · {model_dir}"))
    return choices
