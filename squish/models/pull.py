"""Model downloads from the Hugging Face hub into its cache: plan, disk check, resumable download, verification.

A pull runs in three steps, none of them on the engine thread (this is plain Python networking,
no MLX), all through huggingface_hub:

1. `fetch_plan` reads the repo's file list with sizes and hashes (`model_info(files_metadata=True)`)
   and its config.json (in memory), and estimates disk and RAM. Nothing is written.
2. `download` refuses when the disk cannot hold the rest of the download plus a margin, then
   brings each file into the Hugging Face cache (squish.models.cache): an LFS file's bytes go to
   `blobs/<sha256>.incomplete` with huggingface_hub's `http_get`, resumed from the bytes already
   there, and become the blob once their sha256 matches the hub's; `hf_hub_download` then links
   the blob into the snapshot (and fetches the small non-LFS files itself). Ctrl+C, `cancel` (a
   `tqdm_class` that raises) or a network failure leave the bytes in place; the next pull goes on.
3. It verifies the snapshot (every file's size and hash, safetensors headers, index, config,
   tokenizer), points `refs/main` at the commit and writes squish's marker: a model is listed
   and loaded only when it is complete and verified.

Retries are huggingface_hub's: metadata calls on 429/5xx and time-outs, a body cut by a time-out
or a dropped connection resumed up to 5 times; squish adds retries of a file answered with 5xx.
The endpoint is `HF_ENDPOINT` (huggingface_hub's default) unless a caller passes one.
"""

import fcntl
import json
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EngineFailure, ModelError, ModelNotFound, UserError
from . import cache, catalog, hardware, store
from .store import human_size
# Cancelled, PullProgress, human_size and reason are what a pull's callers meet: they come from here too.
from .transfer import Cancelled, PullProgress, Tracker, again_on_5xx, hub_errors, progress_bar, transfer_errors
from .transfer import reason  # noqa: F401

WANTED_SUFFIXES = cache.HASHED_SUFFIXES
TIMEOUT_S = 30.0


class InsufficientDisk(UserError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS files: the hub's content hash
    blob_id: str | None = None  # git's blob id: what the cache names a non-LFS file's blob

    @property
    def etag(self) -> str:
        """The blob's name in the Hugging Face cache."""
        return self.sha256 or self.blob_id or ""


@dataclass
class Plan:
    name: str  # catalog id, or the repo id for repos outside the catalog
    repo: str
    revision: str  # the commit every file is fetched from
    files: list[RemoteFile]
    ram: catalog.RamEstimate
    cache: Path  # the Hugging Face cache
    records: Path  # squish's records beside it (store.hf_records)
    present_bytes: int  # already in the cache: other revisions' blobs, an interrupted pull's bytes
    free_disk_bytes: int
    ref: str = "main"
    experimental: bool = False
    config: dict = field(default_factory=dict, repr=False)

    @property
    def repo_dir(self) -> Path:
        return cache.repo_path(self.repo, self.cache)

    @property
    def target(self) -> Path:
        """The snapshot the model is loaded from once it is ready."""
        return self.repo_dir / "snapshots" / self.revision

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def remaining_bytes(self) -> int:
        return self.total_bytes - self.present_bytes

    @property
    def disk_needed_bytes(self) -> int:
        return self.remaining_bytes + hardware.disk_margin_bytes(self.remaining_bytes)

    @property
    def disk_ok(self) -> bool:
        return hardware.disk_fits(self.remaining_bytes, self.free_disk_bytes)

    def as_dict(self, hw: hardware.Hardware | None = None) -> dict:
        data = {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "target": str(self.target),
            "files": [{"name": f.name, "size": f.size} for f in self.files],
            "download_bytes": self.total_bytes,
            "present_bytes": self.present_bytes,
            "remaining_bytes": self.remaining_bytes,
            "free_disk_bytes": self.free_disk_bytes,
            "disk_needed_bytes": self.disk_needed_bytes,
            "disk_ok": self.disk_ok,
            "ram_bytes": self.ram.total_bytes,
            "ram": {
                "weights_bytes": self.ram.weights_bytes,
                "kv_cache_bytes": self.ram.kv_bytes,
                "context": self.ram.context,
                "overhead_bytes": self.ram.overhead_bytes,
            },
            "experimental": self.experimental,
        }
        if hw is not None:
            data["ram_fit"] = hardware.fit(self.ram.total_bytes, hw)
        return data


def identify(name: str) -> tuple[str, str]:
    """(display name, hub repo) for a catalog id or repo id, without the network."""
    entry = catalog.find(name)
    if entry is not None:
        if entry.embedded:
            raise UserError(f"{store.EMBEDDED_NAME} is the embedded model: it ships with squish, nothing to pull")
        return entry.id, entry.repo
    if Path(name).expanduser().is_dir():
        raise UserError(f"{name} is a local directory: use it as it is with --model {name}")
    if store.is_repo_id(name):
        entry = catalog.by_repo(name)
        return (entry.id, entry.repo) if entry is not None else (name, name)
    if catalog.looks_like_catalog_id(name):
        raise ModelNotFound(f"unknown model {name!r}: the catalog has {catalog.known_ids()}")
    raise UserError(f"{name!r} is neither a catalog id (such as qwen3:4b) nor a hub repo id (owner/name)")


def ready_dir(
    name: str,
    home: Path | None = None,
    hf_cache: Path | None = None,
    before_verify: Callable[[Path], None] | None = None,
) -> Path | None:
    """The model's directory if `name` is here and verified; never touches the network.

    A model another tool put in the Hugging Face cache is verified here first (every file against
    its hash: `before_verify(path)` is called before that starts); one that fails is not ready,
    and pulling it fetches what is missing or damaged.
    """
    identify(name)
    try:
        ref = store.resolve(name, home, hf_cache)
    except ModelNotFound:
        return None
    if not store.verified(ref, home):
        if before_verify is not None:
            before_verify(ref.path)
        try:
            store.verify(ref, home)
        except ModelError:
            return None
    return ref.path


def endpoint_url(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def hub_headers() -> dict:
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(library_name="squish")
    headers["Accept-Encoding"] = "identity"  # sizes and Range offsets are in raw bytes
    return headers


def file_url(repo: str, filename: str, revision: str, endpoint: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)


def wanted(filename: str) -> bool:
    return filename.endswith(WANTED_SUFFIXES) and not filename.startswith(".") and "/" not in filename


def fetch_plan(
    name: str,
    home: Path | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    hf_cache: Path | None = None,
) -> Plan:
    """What pulling `name` takes: files and sizes from the hub, disk and RAM. Writes nothing."""
    from huggingface_hub import constants

    display, repo = identify(name)
    endpoint = endpoint_url(endpoint)
    if constants.is_offline_mode():
        raise EngineFailure(f"offline (HF_HUB_OFFLINE is set): cannot download {display}")
    with hub_errors(display, endpoint):
        from huggingface_hub import HfApi
        from huggingface_hub.utils import get_session, hf_raise_for_status

        info = HfApi(endpoint=endpoint, library_name="squish").model_info(
            repo, revision=revision, files_metadata=True, timeout=TIMEOUT_S
        )
        files = []
        for sibling in info.siblings or []:
            if not wanted(sibling.rfilename):
                continue
            size = sibling.lfs.size if sibling.lfs else sibling.size
            if size is None:
                raise EngineFailure(f"the hub at {endpoint} did not report the size of {sibling.rfilename}")
            sha256 = sibling.lfs.sha256 if sibling.lfs else None
            files.append(RemoteFile(sibling.rfilename, int(size), sha256, sibling.blob_id))
        names = {f.name for f in files}
        if "config.json" not in names:
            raise UserError(f"{repo} has no config.json: it is not a model squish can run")
        if not any(n.endswith(".safetensors") for n in names):
            raise UserError(f"{repo} has no .safetensors weights: squish runs MLX models (try an mlx-community build)")
        if not all(f.etag for f in files):
            raise EngineFailure(f"the hub at {endpoint} did not report the hashes of {repo}'s files")
        commit = info.sha or revision
        response = get_session().get(
            file_url(repo, "config.json", commit, endpoint), headers=hub_headers(), timeout=TIMEOUT_S
        )
        hf_raise_for_status(response)
    try:
        config = json.loads(response.content)
    except ValueError as exc:
        raise ModelError(f"{repo}'s config.json is not valid JSON: {exc}") from None
    weights = sum(f.size for f in files if f.name.endswith(".safetensors"))
    root = cache.hf_cache(hf_cache)
    entry = catalog.find(display)
    files.sort(key=lambda f: (f.name.endswith(".safetensors"), f.name))
    return Plan(
        name=display,
        repo=repo,
        revision=commit,
        files=files,
        ram=catalog.estimate_from_config(config, weights),
        cache=root,
        records=store.hf_records(home),
        present_bytes=cache.present_bytes(cache.repo_path(repo, root), commit, listed(files)),
        free_disk_bytes=hardware.free_disk_bytes(root),
        ref=revision,
        experimental=entry is not None and entry.experimental,
        config=config,
    )


def listed(files: list[RemoteFile]) -> list[tuple[str, int, str]]:
    return [(f.name, f.size, f.etag) for f in files]


def present_bytes(plan: Plan) -> int:
    """Bytes of the plan's files in the cache now (counted again, e.g. after Ctrl+C)."""
    return cache.present_bytes(plan.repo_dir, plan.revision, listed(plan.files))


@contextmanager
def pull_lock(lock_path: Path, name: str):
    """One squish pull per model at a time: a second one is refused instead of sharing the partial files."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another squish pull of {name} is running") from None
            try:
                current = lock_path.stat().st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(handle.fileno()).st_ino:
                continue  # the holder finished and removed this lock file while we waited: lock the new one
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)
            return


def lock_path(plan: Plan) -> Path:
    return plan.records / cache.repo_folder(plan.repo) / "pull.lock"


def check_disk(plan: Plan) -> None:
    if not plan.disk_ok:
        raise InsufficientDisk(
            f"not enough disk for {plan.name}: it needs {human_size(plan.remaining_bytes)} plus a "
            f"{human_size(plan.disk_needed_bytes - plan.remaining_bytes)} margin, "
            f"{human_size(plan.free_disk_bytes)} is free in {plan.cache}"
        )


def start_state(plan: Plan) -> dict:
    """The pull's record: the files and whether this pull created the snapshot (then it is squish's).

    A record of another commit means the repo changed on the hub: the partial bytes of files that
    changed are dropped, those of unchanged files (same blob) are kept.
    """
    state = cache.read_state(plan.records, plan.repo)
    if state.get("revision") == plan.revision:
        created = bool(state.get("created"))
        hashed = list(state.get("hashed", []))
    else:
        keep = {f.etag for f in plan.files}
        for _, _, etag in state.get("files", []):
            if etag not in keep:
                (plan.repo_dir / "blobs" / f"{etag}.incomplete").unlink(missing_ok=True)
        created, hashed = not plan.target.exists(), []
    state = {
        "name": plan.name,
        "repo": plan.repo,
        "revision": plan.revision,
        "total_bytes": plan.total_bytes,
        "files": listed(plan.files),
        "created": created,
        "hashed": hashed,  # etags already checked, so a resumed pull does not hash them again
    }
    cache.write_state(plan.records, plan.repo, state)
    return state


def download(
    plan: Plan,
    progress: Callable[[PullProgress], None] | None = None,
    cancel: threading.Event | None = None,
    endpoint: str | None = None,
) -> Path:
    """Fetch, verify and install the planned model into the Hugging Face cache; returns its snapshot.

    Refuses before writing a byte when the disk is too small. Raises `Cancelled` when `cancel`
    is set, `EngineFailure` when the network fails (the bytes so far stay for resuming) and
    `ModelError` when a file fails verification (a file whose bytes do not match the hub's hash
    is deleted so the next pull fetches it again).
    """
    if cache.read_marker(plan.records, plan.target) is not None:
        return plan.target
    check_disk(plan)
    endpoint = endpoint_url(endpoint)
    with hub_errors(plan.name, endpoint), pull_lock(lock_path(plan), plan.name):  # an OSError anywhere is one line
        state = start_state(plan)
        tracker = Tracker(plan.total_bytes, present_bytes(plan), progress)
        for remote in plan.files:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"download of {plan.name} stopped; pull it again to resume")
            ensure_file(plan, remote, tracker, cancel, endpoint, state)
        cache.set_ref(plan.repo_dir, plan.ref, plan.revision)
        if progress is not None:
            progress(tracker.progress("verify", ""))
        verify(plan)
        cache.write_marker(
            plan.records,
            plan.target,
            name=plan.name,
            repo=plan.repo,
            revision=plan.revision,
            files={f.name: (f.size, cache.blob_name(plan.target / f.name)) for f in plan.files},
            pulled=state["created"],
        )
        cache.clear_state(plan.records, plan.repo)
    if progress is not None:
        progress(tracker.progress("done", ""))
    return plan.target


def ensure_file(plan: Plan, remote: RemoteFile, tracker: Tracker, cancel, endpoint: str, state: dict) -> None:
    """Make `plan.target / remote.name` a link to a blob whose bytes match the hub's size and hash."""
    from huggingface_hub import hf_hub_download

    pointer = plan.target / remote.name
    if pointer.exists():
        if remote.etag in state["hashed"] and pointer.stat().st_size == remote.size:
            return
        if cache.matches(pointer, remote.size, remote.etag):
            note_hashed(plan, state, remote)
            return
        tracker.advance(-min(pointer.stat().st_size, remote.size), remote.name)
        cache.discard(pointer)  # damaged: its bytes do not match the hash it is named by
    if remote.sha256:
        fill_blob(plan, remote, tracker, cancel, endpoint)
    bar = progress_bar(tracker, remote.name, cancel, plan.name)
    with transfer_errors(plan.name, remote.name):
        path = Path(
            again_on_5xx(
                lambda: hf_hub_download(
                    plan.repo,
                    remote.name,
                    revision=plan.revision,
                    cache_dir=plan.cache,
                    endpoint=endpoint,
                    library_name="squish",
                    tqdm_class=bar,
                )
            )
        )
    if not remote.sha256 and not cache.matches(path, remote.size, remote.etag):
        cache.discard(path)
        raise ModelError(
            f"{plan.name}: {remote.name} does not match the hub's size and hash; it was deleted, "
            f"run `squish pull {plan.name}` again"
        )
    note_hashed(plan, state, remote)
    tracker.advance(0, remote.name, force=True)


def note_hashed(plan: Plan, state: dict, remote: RemoteFile) -> None:
    state["hashed"].append(remote.etag)
    cache.write_state(plan.records, plan.repo, state)


def fill_blob(plan: Plan, remote: RemoteFile, tracker: Tracker, cancel, endpoint: str) -> None:
    """Bring an LFS file's bytes into `blobs/<sha256>`, resuming `blobs/<sha256>.incomplete`.

    huggingface_hub's own download starts every file from zero (its temporary file is deleted on
    failure), so squish keeps the partial under the name the cache layout gives it and continues it
    with huggingface_hub's `http_get` (Range request, its retries, its size check). The bytes become
    the blob only once their sha256 is the hub's.
    """
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock

    blob = plan.repo_dir / "blobs" / remote.etag
    part = blob.with_name(f"{blob.name}.incomplete")
    lock = plan.cache / ".locks" / plan.repo_dir.name / f"{remote.etag}.lock"
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    url = file_url(plan.repo, remote.name, plan.revision, endpoint)
    with WeakFileLock(lock):  # huggingface_hub's lock for this blob: another tool fetching it waits, as squish does
        if blob.exists():
            return

        def fetch() -> None:
            resumed = part.stat().st_size if part.is_file() else 0
            if resumed > remote.size:  # not this file's bytes: start over
                tracker.advance(-remote.size, remote.name)
                part.unlink()
                resumed = 0
            bar = progress_bar(tracker, remote.name, cancel, plan.name, resumed)
            with part.open("ab") as out:
                http_get(url, out, resume_size=resumed, headers=hub_headers(), expected_size=remote.size,
                         displayed_filename=remote.name, tqdm_class=bar)

        with transfer_errors(plan.name, remote.name):
            again_on_5xx(fetch)
        if cache.content_hash(part, remote.etag) != remote.etag:
            tracker.advance(-remote.size, remote.name)
            part.unlink()
            raise ModelError(
                f"{plan.name}: {remote.name} does not match the hub's sha256; it was deleted, "
                f"run `squish pull {plan.name}` again"
            )
        part.replace(blob)


def verify(plan: Plan) -> None:
    """Sizes and hashes were checked file by file; now the model: safetensors headers, index, config, tokenizer.

    A file that fails here holds exactly the hub's bytes (its hash matched), so it is not deleted:
    the repo itself is broken.
    """
    from .verify import verify_dir

    for remote in plan.files:
        path = plan.target / remote.name
        if not path.is_file():
            raise ModelError(f"{plan.name}: {remote.name} is missing after the download")
        if path.stat().st_size != remote.size:
            raise ModelError(f"{plan.name}: {remote.name} has {path.stat().st_size} bytes, the hub says {remote.size}")
    try:
        verify_dir(plan.target)
    except ModelError as exc:
        raise ModelError(f"{plan.name} as the hub has it is not a model squish can load: {exc}") from None
