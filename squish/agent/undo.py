"""Undo for the agent's file changes, without git.

Before `write_file` or `edit_file` changes a file, the run's `Recorder` keeps the file's
previous bytes (or notes that it did not exist, and which folders the write created); after
the change it notes a hash of the new content. Each run is one JSON record in a folder per
workspace under `$SQUISH_HOME/undo/`, with the previous contents beside it by hash, so
`squish undo` in another process sees what the chat app's agent did.

`UndoLog.undo(count)` reverts the newest `count` runs not yet undone, newest first. A file
whose content is no longer what the agent left (someone changed it since) is a conflict:
nothing is reverted unless `force` is given, so undo never overwrites another's change
without asking. `run_shell` and MCP tools cannot be undone (their approval says so).
"""

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .tools import unified_diff

KEEP_RUNS = 50  # records kept per workspace; older ones (and their contents) are dropped


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str | None:
    """The content hash of a file, None when there is none."""
    try:
        return digest(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def as_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Reverted:
    path: str
    diff: str  # what the revert changes, as a unified diff (current -> restored)
    deleted: bool  # the agent had created the file, so undo removes it


@dataclass
class UndoResult:
    runs: list[dict] = field(default_factory=list)  # the records reverted (or that would be)
    reverted: list[Reverted] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # files changed since the agent's change
    done: bool = False  # False: nothing was changed (conflicts, nothing to undo, or a dry run)

    def diff(self) -> str:
        return "".join(r.diff for r in self.reverted)


class UndoLog:
    """The undo records of one workspace."""

    def __init__(self, root: str | os.PathLike, workspace: str | os.PathLike, keep: int = KEEP_RUNS):
        self.keep = keep
        self.workspace = Path(workspace).resolve()
        self.dir = Path(root) / digest(str(self.workspace).encode())[:16]
        self.blobs = self.dir / "blobs"

    def begin(self, task: str) -> "Recorder":
        """The recorder of one agent run; nothing is written until the run changes a file."""
        return Recorder(self, task)

    def records(self) -> list[dict]:
        """Every run record, newest first."""
        records = []
        for path in self.dir.glob("run-*.json"):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a half-written or foreign file is not a record
        return sorted(records, key=lambda r: str(r.get("id", "")), reverse=True)

    def pending(self) -> list[dict]:
        """Runs whose changes can still be undone, newest first."""
        return [r for r in self.records() if not r.get("undone") and r.get("files")]

    def undo(self, count: int = 1, force: bool = False, dry_run: bool = False) -> UndoResult:
        if count < 1:
            raise ValueError("the number of runs to undo must be at least 1")
        runs = self.pending()[:count]
        result = UndoResult(runs=runs)
        plan = [entry for run in runs for entry in reversed(run["files"])]  # newest change first
        # A file is a conflict when it is not what the agent left, counting the newer runs as reverted.
        state: dict[str, str | None] = {}
        oldest: dict[str, dict] = {}  # each file's oldest change in the plan: what it goes back to
        for entry in plan:
            path = entry["path"]
            current = state[path] if path in state else file_digest(self.workspace / path)
            if current != entry["after"] and path not in result.conflicts:
                result.conflicts.append(path)
            state[path] = entry["before"]
            oldest[path] = entry
        result.reverted = [self._describe(entry) for entry in oldest.values()]
        if not runs or dry_run or (result.conflicts and not force):
            return result
        for entry in oldest.values():
            self._restore(entry)
        for run in runs:
            run["undone"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._save(run)
        result.done = True
        return result

    # Reverting.

    def _content(self, sha: str | None) -> bytes | None:
        return None if sha is None else (self.blobs / sha).read_bytes()

    def _describe(self, entry: dict) -> Reverted:
        real = self.workspace / entry["path"]
        current = real.read_bytes() if real.is_file() else b""
        before = self._content(entry["before"])
        diff = unified_diff(as_text(current), as_text(before or b""), entry["path"])
        return Reverted(entry["path"], diff, before is None)

    def _restore(self, entry: dict) -> None:
        real = self.workspace / entry["path"]
        before = self._content(entry["before"])
        if before is None:
            real.unlink(missing_ok=True)
            for folder in sorted(entry.get("created_dirs", []), key=len, reverse=True):
                try:
                    (self.workspace / folder).rmdir()  # only when empty: never someone's files
                except OSError:
                    pass
        else:
            real.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(real, before)

    # Records.

    def _save(self, run: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / f"run-{run['id']}.json", json.dumps(run, ensure_ascii=False, indent=1).encode())

    def _keep(self, data: bytes) -> str:
        sha = digest(data)
        blob = self.blobs / sha
        if not blob.exists():
            self.blobs.mkdir(parents=True, exist_ok=True)
            write_atomic(blob, data)
        return sha

    def prune(self) -> None:
        """Keep the newest `keep` records and the contents they refer to."""
        records = self.records()
        for old in records[self.keep :]:
            (self.dir / f"run-{old['id']}.json").unlink(missing_ok=True)
        used = {e["before"] for r in records[: self.keep] for e in r.get("files", []) if e["before"]}
        if self.blobs.is_dir():
            for blob in self.blobs.iterdir():
                if blob.name not in used and not blob.name.endswith(".tmp"):
                    blob.unlink(missing_ok=True)


class Recorder:
    """Records the files one agent run changes. Used from the run's tool thread."""

    def __init__(self, log: UndoLog, task: str):
        self.log = log
        self.run = {
            "id": f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}",  # sorts by start time
            "workspace": str(log.workspace),
            "task": " ".join(task.split())[:200],
            "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "files": [],
        }
        self._open: dict[str, dict] = {}  # path -> its entry, while a change is under way

    def _relative(self, real: Path) -> str | None:
        try:
            return real.relative_to(self.log.workspace).as_posix()
        except ValueError:
            return None

    def before(self, real: Path) -> None:
        """Called before a tool changes `real`: keep what is there now."""
        rel = self._relative(real)
        if rel is None:
            return
        entry = next((e for e in self.run["files"] if e["path"] == rel), None)
        if entry is None:
            data = real.read_bytes() if real.is_file() else None
            missing, folder = [], real.parent
            while folder != self.log.workspace and not folder.exists():
                missing.append(self._relative(folder))
                folder = folder.parent
            entry = {
                "path": rel,
                "before": None if data is None else self.log._keep(data),
                "after": None,
                "created_dirs": missing,
            }
        self._open[rel] = entry

    def after(self, real: Path) -> None:
        """Called after the tool ran (succeeded or not): note what it left."""
        rel = self._relative(real)
        entry = self._open.pop(rel, None) if rel is not None else None
        if entry is None:
            return
        entry["after"] = file_digest(real)
        known = entry in self.run["files"]
        if not known and entry["after"] == entry["before"]:
            return  # nothing changed (the edit failed before writing)
        if not known:
            self.run["files"].append(entry)
        self.log._save(self.run)
        if not known and len(self.run["files"]) == 1:
            self.log.prune()

    @property
    def changed(self) -> list[str]:
        return [e["path"] for e in self.run["files"]]
