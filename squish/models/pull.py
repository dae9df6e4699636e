"""Model downloads from the Hugging Face hub: plan, disk check, resumable download, verification.

A pull runs in three steps, none of them on the engine thread (this is plain Python networking,
no MLX):

1. `fetch_plan` reads the repo's file list with sizes (`model_info(files_metadata=True)`) and its
   config.json (in memory), and estimates disk and RAM. Nothing is written.
2. `download` refuses when the disk cannot hold the rest of the download plus a margin, then
   fetches each file into `<models>/.<repo>.partial/` as `<file>.part`, resuming from the bytes
   already there with an HTTP Range request. Ctrl+C, `cancel` or a network failure leave the
   staging directory in place; the next pull continues it.
3. It verifies every file (present, size, sha256 for LFS files, safetensors headers, config and
   tokenizer), writes the `squish.json` manifest last and renames the staging directory to the
   model directory: a model is listed and loaded only when it is complete and verified.

The endpoint is `HF_ENDPOINT` (huggingface_hub's default) unless a caller passes one.
"""

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EngineFailure, ModelError, ModelNotFound, SquishError, UserError
from . import catalog, hardware, store

WANTED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".tiktoken", ".jinja")
PROGRESS_INTERVAL_S = 0.1
SPEED_WINDOW_S = 5.0
RETRIES = 3  # transport failures in a row, per file, before giving up (each one resumes)
TIMEOUT_S = 30.0


class Cancelled(SquishError):
    """The user stopped the download; what arrived is kept for the next pull."""

    exit_code = 130


class InsufficientDisk(UserError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS files: the hub's content hash


@dataclass
class Plan:
    name: str  # catalog id, or the repo id for repos outside the catalog
    repo: str
    revision: str  # the commit every file is fetched from
    files: list[RemoteFile]
    ram: catalog.RamEstimate
    target: Path
    staging: Path
    present_bytes: int  # already downloaded by an interrupted pull of the same commit
    free_disk_bytes: int
    experimental: bool = False
    config: dict = field(default_factory=dict, repr=False)

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


@dataclass(frozen=True)
class PullProgress:
    phase: str  # download, verify or done
    file: str
    done_bytes: int
    total_bytes: int
    speed_bps: float
    eta_s: float | None


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


def ready_dir(name: str, home: Path | None = None) -> Path | None:
    """The model directory if `name` was already pulled; never touches the network."""
    _, repo = identify(name)
    target = store.model_dir_for(repo, home)
    return target if store.read_manifest(target) is not None else None


def endpoint_url(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


@contextmanager
def hub_errors(name: str, endpoint: str):
    """Turn huggingface_hub and transport errors into squish errors with one clear line."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except SquishError:
        raise
    except errors.GatedRepoError:
        raise UserError(f"{name} is gated on the hub: accept its license there and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise ModelNotFound(f"{name} was not found on the hub at {endpoint} (or it is private: set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise ModelNotFound(f"{name}: revision not found on the hub") from None
    except errors.OfflineModeIsEnabled:
        raise EngineFailure(f"offline (HF_HUB_OFFLINE is set): cannot download {name}") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise EngineFailure(f"the hub at {endpoint} answered HTTP {status} for {name}") from None
    except (httpx2.HTTPError, ConnectionError) as exc:
        raise EngineFailure(f"cannot reach the hub at {endpoint}: {reason(exc)}") from None
    except OSError as exc:
        raise EngineFailure(f"download of {name} failed: {reason(exc)}") from None


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


def fetch_plan(name: str, home: Path | None = None, endpoint: str | None = None, revision: str = "main") -> Plan:
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
            files.append(RemoteFile(sibling.rfilename, int(size), sibling.lfs.sha256 if sibling.lfs else None))
        names = {f.name for f in files}
        if "config.json" not in names:
            raise UserError(f"{repo} has no config.json: it is not a model squish can run")
        if not any(n.endswith(".safetensors") for n in names):
            raise UserError(f"{repo} has no .safetensors weights: squish runs MLX models (try an mlx-community build)")
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
    target, staging = store.model_dir_for(repo, home), store.staging_dir_for(repo, home)
    entry = catalog.find(display)
    return Plan(
        name=display,
        repo=repo,
        revision=commit,
        files=sorted(files, key=lambda f: (f.name.endswith(".safetensors"), f.name)),
        ram=catalog.estimate_from_config(config, weights),
        target=target,
        staging=staging,
        present_bytes=present_bytes(staging, commit, files),
        free_disk_bytes=hardware.free_disk_bytes(store.models_dir(home)),
        experimental=entry is not None and entry.experimental,
        config=config,
    )


def present_bytes(staging: Path, revision: str, files: list[RemoteFile]) -> int:
    """Bytes an interrupted pull of the same commit left in the staging directory."""
    if store.read_pull_state(staging).get("revision") != revision:
        return 0
    total = 0
    for f in files:
        for path in (staging / f.name, staging / f"{f.name}.part"):
            if path.is_file():
                total += min(path.stat().st_size, f.size)
                break
    return total


class Tracker:
    """Bytes done across the whole pull, the speed over the last seconds, and throttled reports."""

    def __init__(self, total: int, done: int, report: Callable[[PullProgress], None] | None):
        self.total, self.done, self.report = total, done, report
        self.samples: deque = deque([(time.monotonic(), 0)])
        self.session_bytes = 0
        self.last_report = 0.0

    def advance(self, nbytes: int, filename: str, force: bool = False) -> None:
        self.done += nbytes
        self.session_bytes += nbytes
        now = time.monotonic()
        self.samples.append((now, self.session_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
            self.samples.popleft()
        if self.report is not None and (force or now - self.last_report >= PROGRESS_INTERVAL_S):
            self.last_report = now
            self.report(self.progress("download", filename))

    def speed(self) -> float:
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def progress(self, phase: str, filename: str) -> PullProgress:
        speed = self.speed()
        remaining = self.total - self.done
        eta = remaining / speed if speed > 0 else (0.0 if remaining <= 0 else None)
        return PullProgress(phase, filename, self.done, self.total, speed, eta)


@contextmanager
def pull_lock(staging: Path, name: str):
    """One pull per model at a time: a second one is refused instead of sharing the .part files."""
    lock_path = staging.with_name(staging.name + ".lock")
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


def check_disk(plan: Plan) -> None:
    if not plan.disk_ok:
        raise InsufficientDisk(
            f"not enough disk for {plan.name}: it needs {human_size(plan.remaining_bytes)} plus a "
            f"{human_size(plan.disk_needed_bytes - plan.remaining_bytes)} margin, "
            f"{human_size(plan.free_disk_bytes)} is free in {plan.target.parent}"
        )


def human_size(nbytes: float) -> str:
    if nbytes >= 1e9:
        return f"{nbytes / 1e9:.2f} GB"
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.1f} MB"
    return f"{nbytes / 1e3:.1f} kB"


def download(
    plan: Plan,
    progress: Callable[[PullProgress], None] | None = None,
    cancel: threading.Event | None = None,
    endpoint: str | None = None,
) -> Path:
    """Fetch, verify and install the planned model; returns its ready directory.

    Refuses before writing a byte when the disk is too small. Raises `Cancelled` when `cancel`
    is set, `EngineFailure` when the network fails (the partial download stays for resuming) and
    `ModelError` when a file fails verification (that file is deleted so the next pull refetches it).
    """
    if store.read_manifest(plan.target) is not None:
        return plan.target
    check_disk(plan)
    endpoint = endpoint_url(endpoint)
    with hub_errors(plan.name, endpoint), pull_lock(plan.staging, plan.name):  # an OSError anywhere is one line
        if store.read_pull_state(plan.staging).get("revision") != plan.revision:
            shutil.rmtree(plan.staging, ignore_errors=True)  # another commit's files: start over
        plan.staging.mkdir(parents=True, exist_ok=True)
        state = {"name": plan.name, "repo": plan.repo, "revision": plan.revision, "total_bytes": plan.total_bytes}
        (plan.staging / store.PULL_STATE).write_text(json.dumps(state))
        tracker = Tracker(plan.total_bytes, present_bytes(plan.staging, plan.revision, plan.files), progress)
        for remote in plan.files:
            fetch_file(plan, remote, tracker, cancel, endpoint)
        if progress is not None:
            progress(tracker.progress("verify", ""))
        verify(plan)
        store.write_manifest(
            plan.staging,
            name=plan.name,
            repo=plan.repo,
            revision=plan.revision,
            source=f"hf:{plan.repo}@{plan.revision}",
            size_bytes=plan.total_bytes,
            files=[f.name for f in plan.files],
        )
        (plan.staging / store.PULL_STATE).unlink(missing_ok=True)
        shutil.rmtree(plan.target, ignore_errors=True)  # a stale directory without a manifest
        plan.staging.rename(plan.target)
    if progress is not None:
        progress(tracker.progress("done", ""))
    return plan.target


def fetch_file(plan: Plan, remote: RemoteFile, tracker: Tracker, cancel: threading.Event | None, endpoint: str):
    """Download one file into the staging directory, resuming its .part file with a Range request."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session, hf_raise_for_status

    final = plan.staging / remote.name
    if final.is_file() and final.stat().st_size == remote.size:
        return
    part = final.with_name(final.name + ".part")
    url = file_url(plan.repo, remote.name, plan.revision, endpoint)
    failures = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        if offset > remote.size:
            tracker.advance(-min(offset, remote.size), remote.name)
            part.unlink()
            offset = 0
        if offset == remote.size:
            break
        headers = hub_headers()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        received = 0
        try:
            timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT  # huggingface_hub's own setting (env), 10 s
            with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code == 416:  # our part is not a prefix of this file: refetch it
                    tracker.advance(-offset, remote.name)
                    part.unlink()
                    continue
                if response.status_code >= 400:
                    response.read()
                hf_raise_for_status(response)
                if offset and response.status_code == 200:  # the server ignored the Range: start over
                    tracker.advance(-offset, remote.name)
                    offset = 0
                with part.open("ab" if offset else "wb") as out:
                    for chunk in response.iter_bytes():  # as it arrives: a dropped link loses nothing
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(f"download of {plan.name} stopped; pull it again to resume")
                        out.write(chunk)
                        received += len(chunk)
                        tracker.advance(len(chunk), remote.name)
            if offset + received != remote.size:
                raise httpx2.RemoteProtocolError(
                    f"{remote.name}: the hub sent {offset + received} of {remote.size} bytes"
                )
        except httpx2.TransportError as exc:
            failures = 0 if received else failures + 1
            if failures >= RETRIES:
                raise EngineFailure(
                    f"download of {plan.name} failed at {remote.name}: {reason(exc)} "
                    f"(run `squish pull {plan.name}` again to resume)"
                ) from None
            time.sleep(0.5 * failures)
            continue
        break
    tracker.advance(0, remote.name, force=True)
    part.replace(final)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(plan: Plan) -> None:
    """Every file present with the hub's size and hash, safetensors headers whole, config and tokenizer sane."""
    from .verify import check_safetensors, verify_dir

    def corrupt(path: Path, why: str) -> ModelError:
        path.unlink(missing_ok=True)
        return ModelError(f"{plan.name}: {path.name} {why}; it was deleted, run `squish pull {plan.name}` again")

    for remote in plan.files:
        path = plan.staging / remote.name
        if not path.is_file():
            raise ModelError(f"{plan.name}: {remote.name} is missing after the download")
        if path.stat().st_size != remote.size:
            raise corrupt(path, f"has {path.stat().st_size} bytes, the hub says {remote.size}")
        if remote.sha256 and sha256_of(path) != remote.sha256:
            raise corrupt(path, "does not match the hub's sha256")
        if remote.name.endswith(".safetensors"):
            try:
                check_safetensors(path)
            except ModelError as exc:
                raise corrupt(path, f"failed its header check ({exc})") from None
    index = plan.staging / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError) as exc:
            raise ModelError(f"{plan.name}: model.safetensors.index.json is invalid: {exc}") from None
        missing = sorted(s for s in shards if not (plan.staging / s).is_file())
        if missing:
            raise ModelError(f"{plan.name}: the weight index names missing shards {', '.join(missing)}")
    verify_dir(plan.staging)
