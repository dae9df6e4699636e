"""The Hugging Face cache as squish uses it: MLX models in it, squish's records beside it, removals.

The cache is huggingface_hub's (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub),
shared with mlx_lm and transformers, so a model is stored once. Its layout, per model repo:
`models--<owner>--<name>/blobs/<etag>` holds the bytes, named by their sha256 (LFS files) or their
git blob id (other files); `snapshots/<commit>/<file>` links to a blob; `refs/main` names a commit.

squish writes into the cache only what that layout defines: blob bytes (resumably, as
`blobs/<etag>.incomplete` while they arrive), snapshot links through `hf_hub_download`, and
`refs/main` once a pull completes. Its own records live under `<squish home>/models/.hf/`, one
folder per repo: `<commit>.json`, the marker of a snapshot squish verified (each file's size and
blob, whether squish pulled it, when it was last used), and `pull.json` / `pull.lock` while a pull
of that repo is under way. A marker holds only while every file it lists still links to the same
blob with the same size, so a snapshot another tool changed is verified again before it is loaded.
"""

import hashlib
import json
import os
import re
import time
from pathlib import Path

from ..errors import ModelError
from .verify import is_mlx_layout, verify_dir

HASHED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".tiktoken", ".jinja")  # what mlx_lm reads
SHA256 = re.compile(r"[0-9a-f]{64}")
GIT_OID = re.compile(r"[0-9a-f]{40}")
PULL_STATE = "pull.json"


def hf_cache(cache: Path | None = None) -> Path:
    """`cache` when given, else huggingface_hub's cache directory."""
    if cache is not None:
        return Path(cache)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> str:
    """huggingface_hub's folder name for a model repo: models--owner--name."""
    return "models--" + repo.replace("/", "--")


def repo_of(folder: str) -> str:
    return folder.removeprefix("models--").replace("--", "/")


def snapshot_of(path: Path) -> tuple[Path, str] | None:
    """(repo directory, commit) when `path` is a snapshot in a Hugging Face cache."""
    parent = path.parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        return parent.parent, path.name
    return None


def blob_name(path: Path) -> str | None:
    """The blob a snapshot file links to (its etag), or None for a plain file."""
    try:
        return Path(os.readlink(path)).name
    except OSError:
        return None


def content_hash(path: Path, etag: str) -> str:
    """The hash the bytes of `path` must have to be the blob `etag`: sha256, or git's blob id."""
    digest = hashlib.sha256() if SHA256.fullmatch(etag) else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def matches(path: Path, size: int, etag: str) -> bool:
    """`path` holds `size` bytes whose hash is `etag`."""
    try:
        return path.stat().st_size == size and content_hash(path, etag) == etag
    except OSError:
        return False


def discard(pointer: Path) -> None:
    """Delete a snapshot file and its blob: bytes that do not match the hash they are named by are of use to no one."""
    link = blob_name(pointer)
    pointer.unlink(missing_ok=True)
    if link is not None:
        # the repo's blob (a link into a shared store behind it goes, the store's file stays)
        (pointer.parent.parent.parent / "blobs" / link).unlink(missing_ok=True)


def set_ref(repo_dir: Path, ref: str, commit: str) -> None:
    """Point `refs/<ref>` at `commit`, as huggingface_hub does after a download, so tools offline find it."""
    if ref == commit:
        return
    path = repo_dir / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.squish.tmp")
    tmp.write_text(commit)
    tmp.replace(path)


def snapshots(repo_dir: Path) -> list[Path]:
    """The repo's snapshots, the one `refs/main` names first, then the newest."""
    try:
        found = [p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return []
    try:
        main = (repo_dir / "refs" / "main").read_text().strip()
    except OSError:
        main = None
    return sorted(found, key=lambda p: (p.name != main, -p.stat().st_mtime))


def marker_path(records: Path, snapshot: Path) -> Path:
    return records / snapshot.parent.parent.name / f"{snapshot.name}.json"


def read_marker(records: Path, snapshot: Path) -> dict | None:
    """squish's marker of `snapshot`, if it still describes the files there (sizes and blobs)."""
    try:
        marker = json.loads(marker_path(records, snapshot).read_text())
        if marker.get("snapshot") != str(snapshot):
            return None
        for name, (size, blob) in marker["files"].items():
            if (snapshot / name).stat().st_size != size or blob_name(snapshot / name) != blob:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker


def write_marker(records: Path, snapshot: Path, **fields) -> dict:
    path = marker_path(records, snapshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = {"snapshot": str(snapshot), "verified": time.time(), **fields}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(marker, indent=2))
    tmp.replace(path)
    return marker


def mark_used(records: Path, snapshot: Path) -> None:
    marker = read_marker(records, snapshot)
    if marker is not None:
        try:
            kept = {key: value for key, value in marker.items() if key != "snapshot"}
            write_marker(records, snapshot, **{**kept, "last_used": time.time()})
        except OSError:
            pass


def model_files(snapshot: Path) -> list[Path]:
    return sorted(p for p in snapshot.iterdir() if p.is_file() and p.name.endswith(HASHED_SUFFIXES))


def loadable(snapshot: Path) -> bool:
    """An MLX model that looks whole, without hashing: config, safetensors headers, index, tokenizer."""
    try:
        return is_mlx_layout(snapshot, verify_dir(snapshot))
    except (ModelError, OSError):
        return False


def repo_path(repo: str, cache: Path) -> Path:
    """The repo's folder in the cache; hub repo ids ignore case, so an existing folder spelled otherwise is it."""
    path = cache / repo_folder(repo)
    if not path.is_dir() and cache.is_dir():
        for other in cache.glob("models--*"):
            if other.name.lower() == path.name.lower():
                return other
    return path


def find(repo: str, cache: Path, records: Path) -> Path | None:
    """The snapshot of `repo` to load: verified by squish, or an MLX model that looks whole."""
    for snapshot in snapshots(repo_path(repo, cache)):
        if read_marker(records, snapshot) is not None or loadable(snapshot):
            return snapshot
    return None


def cached_models(cache: Path, records: Path) -> list[tuple[str, Path]]:
    """(repo id, snapshot) of every MLX model in the cache: pulled by squish, mlx_lm or anything else."""
    found = []
    for folder in sorted(cache.glob("models--*")) if cache.is_dir() else []:
        snapshot = find(repo_of(folder.name), cache, records)
        if snapshot is not None:
            found.append((repo_of(folder.name), snapshot))
    return found


def verify_snapshot(snapshot: Path, records: Path, **fields) -> dict:
    """Check every model file against the hash its blob is named by, then the model itself; write the marker.

    The files' hashes stand in for the hub's sizes and sha256 (a blob is named by them), so this needs no
    network. Plain files (a cache without symlinks) have no name to check against: their headers still are.
    """
    files = {}
    for path in model_files(snapshot):
        blob = blob_name(path)
        named = blob is not None and (SHA256.fullmatch(blob) or GIT_OID.fullmatch(blob))
        if named and content_hash(path, blob) != blob:
            again = f"`squish pull {fields['name']}`" if fields.get("name") else "a pull"
            raise ModelError(f"{path} does not match its hash (the file is damaged): {again} fetches it again")
        files[path.name] = (path.stat().st_size, blob)
    config = verify_dir(snapshot)
    if not is_mlx_layout(snapshot, config):
        raise ModelError(f"{snapshot} is not an MLX model (PyTorch-layout weights: convert it with mlx_lm.convert)")
    return write_marker(records, snapshot, files=files, **fields)


def present_bytes(repo_dir: Path, commit: str, files: list[tuple[str, int, str]]) -> int:
    """Bytes of (name, size, etag) files already in the cache: linked, in a blob, or partly arrived."""
    total = 0
    for name, size, etag in files:
        blobs = repo_dir / "blobs"
        for path in (repo_dir / "snapshots" / commit / name, blobs / etag, blobs / f"{etag}.incomplete"):
            if path.is_file():
                total += min(path.stat().st_size, size)
                break
    return total


def read_state(records: Path, repo: str) -> dict:
    try:
        state = json.loads((records / repo_folder(repo) / PULL_STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(records: Path, repo: str, state: dict) -> None:
    path = records / repo_folder(repo) / PULL_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def clear_state(records: Path, repo: str) -> None:
    (records / repo_folder(repo) / PULL_STATE).unlink(missing_ok=True)


def pulls(records: Path) -> list[dict]:
    """The state of every pull under way or interrupted (`repo` and `name` in each)."""
    found = []
    for path in sorted(records.glob(f"models--*/{PULL_STATE}")) if records.is_dir() else []:
        state = read_state(records, repo_of(path.parent.name))
        if state:
            found.append(state)
    return found


def owned(records: Path, snapshot: Path) -> bool:
    """squish pulled this snapshot and nothing else was put in it: removing it takes nothing from another tool."""
    marker = read_marker(records, snapshot)
    if marker is None or not marker.get("pulled"):
        return False
    try:
        present = {p.name for p in snapshot.iterdir()}
    except OSError:
        return False
    return present <= set(marker["files"])


def removal(cache: Path, repo_dir: Path, commits: list[str]):
    """huggingface_hub's plan for deleting these revisions: their snapshots and refs, and the blobs no
    other revision links to (the whole repo folder when no revision is left)."""
    from huggingface_hub import scan_cache_dir

    scan = scan_cache_dir(cache)
    for warning in scan.warnings:
        if str(repo_dir) in str(warning):
            raise ModelError(f"the Hugging Face cache entry {repo_dir} is damaged ({warning}): delete it by hand")
    return scan.delete_revisions(*commits)
