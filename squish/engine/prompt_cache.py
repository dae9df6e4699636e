"""A chat's KV cache on disk, so a resumed chat prefills only its new message.

Two files per cache, in a directory the caller chooses (squish keeps them in
`<squish home>/kv/`):

- `<key>.safetensors`: mlx-lm's `save_prompt_cache` output, that is the `state` of each cache
  object, their class names, and squish's metadata: the exact token list whose keys and values
  are in the cache, the identity of the model that computed them, the mlx-lm version and
  the number of leading messages the context had left out (squish/engine/context.py);
- `<key>.json`: the cache file's size and sha256, written after it.

`load` refuses (raises `Rejected`, one line for the user) a cache whose checksum, size or
metadata do not match, or that another model or mlx-lm version made; the caller then prefills
the history as if there were no cache. Both files are written to temporary names and renamed,
so a crash leaves the old pair or a pair whose checksum fails, never a cache that loads wrong.
Disk use is bounded by `prune`: least recently used (saved or loaded) first.

What this relies on (also for squish/engine/native.py): the session's cache is a list of
mlx-lm cache objects (`mlx_lm.models.cache`) with `state`/`from_state`, and the token list
equals what the cache holds. Everything that imports mlx runs on the engine thread;
`usage`, `prune` and `remove` are plain file operations, safe on any thread.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

FORMAT = "1"
SUFFIX = ".safetensors"
SIDECAR = ".json"
CHUNK = 1 << 20


class Rejected(Exception):
    """A cache file that cannot be used; the message is one line for the user."""


@dataclass
class Restored:
    cache: list
    tokens: list[int]
    left_out: int


def _mlx_lm_version() -> str:
    from importlib.metadata import version

    return version("mlx-lm")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _compact(cache: list) -> list:
    """The cache without the unused tail of each KVCache buffer (mlx-lm grows them 256 at a time)."""
    from mlx_lm.models.cache import KVCache

    compact = []
    for entry in cache:
        if type(entry) is KVCache and entry.keys is not None and entry.keys.shape[2] > entry.offset:
            keys, values = entry.keys[..., : entry.offset, :], entry.values[..., : entry.offset, :]
            entry = KVCache.from_state((keys, values, entry.offset))
        compact.append(entry)
    return compact


def nbytes(cache: list, saved: bool = False) -> int:
    """Bytes of the cache's keys and values: in memory (mlx-lm's buffers, grown 256 tokens at a
    time), or as they would be saved (`saved`)."""
    return sum(entry.nbytes for entry in (_compact(cache) if saved else cache))


def save(path: Path, cache: list, tokens: list[int], model: str, left_out: int = 0) -> int:
    """Write the cache and its checksum; returns the bytes written. Raises OSError on failure
    (no space, no permission), leaving no temporary file and the earlier pair, if any, as it was."""
    import mlx.core as mx
    from mlx_lm.models.cache import save_prompt_cache

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{SUFFIX}")
    sidecar, sidecar_tmp = path.with_suffix(SIDECAR), path.with_name(f".{path.stem}.{os.getpid()}.tmp{SIDECAR}")
    metadata = {
        "squish_format": FORMAT,
        "model": model,
        "mlx_lm": _mlx_lm_version(),
        "tokens": json.dumps(tokens),
        "left_out": str(left_out),
    }
    try:
        compact = _compact(cache)
        mx.eval([entry.state for entry in compact])
        try:
            save_prompt_cache(str(tmp), compact, metadata)
        except RuntimeError as exc:  # MLX reports a failed write as RuntimeError("[write] ...")
            raise OSError(f"{exc} (is the disk full?)") from None
        size = tmp.stat().st_size
        sidecar_tmp.write_text(json.dumps({"sha256": sha256_of(tmp), "bytes": size, "tokens": len(tokens)}))
        tmp.replace(path)
        sidecar_tmp.replace(sidecar)
    finally:
        for leftover in (tmp, sidecar_tmp):
            leftover.unlink(missing_ok=True)
    return size


def load(path: Path, model: str) -> Restored:
    """The cache saved at `path` if it is whole and was made by `model`; else raises Rejected."""
    from mlx_lm.models.cache import load_prompt_cache

    path = Path(path)
    try:
        check = json.loads(path.with_suffix(SIDECAR).read_text())
        size = path.stat().st_size
    except FileNotFoundError:
        raise Rejected("the saved KV cache is incomplete (no checksum file)") from None
    except (OSError, ValueError) as exc:
        raise Rejected(f"the saved KV cache cannot be read: {exc}") from None
    if not isinstance(check, dict) or size != check.get("bytes"):
        raise Rejected(f"the saved KV cache is truncated ({size} of {check.get('bytes')} bytes)")
    if sha256_of(path) != check.get("sha256"):
        raise Rejected("the saved KV cache is corrupt (checksum mismatch)")
    try:
        cache, metadata = load_prompt_cache(str(path), return_metadata=True)
        tokens = json.loads(metadata["tokens"])
        left_out = int(metadata.get("left_out", 0))
    except Exception as exc:  # a file that passes the checksum but is not ours: any failure means the same
        raise Rejected(f"the saved KV cache cannot be read: {type(exc).__name__}") from None
    if metadata.get("squish_format") != FORMAT:
        raise Rejected(f"the saved KV cache has format {metadata.get('squish_format')}, not {FORMAT}")
    if metadata.get("model") != model:
        raise Rejected("the saved KV cache was made by another model")
    if metadata.get("mlx_lm") != _mlx_lm_version():
        raise Rejected(f"the saved KV cache was made by mlx-lm {metadata.get('mlx_lm')}")
    # Layers that count their tokens (KVCache offset) must hold the token list; recurrent ones
    # (ArraysCache) keep a state, accounted for by the list.
    if not cache or any(c.offset != len(tokens) for c in cache if isinstance(getattr(c, "offset", None), int)):
        raise Rejected("the saved KV cache does not match its token list")
    touch(path)
    return Restored(cache, tokens, left_out)


def touch(path: Path) -> None:
    """Mark the cache as used now (least recently used caches are pruned first)."""
    try:
        os.utime(Path(path).with_suffix(SIDECAR))
    except OSError:
        pass


def _pairs(directory: Path) -> list[tuple[float, int, Path]]:
    """(last used, bytes of both files, path) of every cache in `directory`."""
    found = []
    try:
        entries = list(Path(directory).glob(f"*{SUFFIX}"))
    except OSError:
        return []
    for path in entries:
        if path.name.startswith("."):
            continue
        sidecar = path.with_suffix(SIDECAR)
        try:
            size = path.stat().st_size
            used = sidecar.stat().st_mtime if sidecar.exists() else path.stat().st_mtime
            size += sidecar.stat().st_size if sidecar.exists() else 0
        except OSError:
            continue
        found.append((used, size, path))
    return found


def usage(directory: Path) -> dict[str, int]:
    """Bytes on disk per cache key (the file name without its suffix)."""
    return {path.stem: size for _, size, path in _pairs(directory)}


def remove(path: Path) -> None:
    path = Path(path)
    for file in (path, path.with_suffix(SIDECAR)):
        file.unlink(missing_ok=True)


def prune(directory: Path, limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete least recently used caches until the directory holds at most `limit_bytes`;
    `keep` (the one just saved) goes last. Returns the paths removed."""
    pairs = sorted(_pairs(directory), key=lambda pair: (keep is not None and pair[2] == Path(keep), pair[0]))
    total = sum(size for _, size, _ in pairs)
    removed = []
    for _, size, path in pairs:
        if total <= limit_bytes:
            break
        remove(path)
        removed.append(path)
        total -= size
    return removed
