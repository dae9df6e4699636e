"""The workspace sandbox: file tools stay under one root, the shell runs there with a timeout.

Paths from the model are refused with a `ToolError` (which the model sees) when they hold a
`..` component, are absolute outside the root, or resolve (symlinks followed) outside it.
The shell is not contained: it runs in the root, without stdin, under a timeout and an
output cap, and it is a risky tool that needs the user's approval.

A tool call that times out or is cancelled may still be running in its thread. `Call` makes
that harmless: a file change is written aside and renamed into place only while the call is
live, and the call's shell processes are killed with their process group when it is stopped.
"""

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable


class ToolError(Exception):
    """A failure the model should read and can act on (bad path, missing file, timeout)."""


class Call:
    """One tool call, shared by the agent loop and the thread that runs the call's handler.

    Live until `close()` (the call timed out, or the user cancelled the run). `commit` makes a
    change only while the call is live, holding the lock that `close` takes: the change either
    lands before the loop decides the call failed (and the loop then reports what it did) or it
    never lands. Processes started with `spawn` are killed, with their group, by `close`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.closed = False
        self.committed = False
        self._processes: set[subprocess.Popen] = set()

    def commit(self, change: Callable[[], None]) -> None:
        with self._lock:
            if self.closed:
                raise ToolError("the call was stopped (timed out or cancelled) before its change was made")
            change()
            self.committed = True

    def spawn(self, start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self.closed:
                raise ToolError("the call was stopped (timed out or cancelled) before the command started")
            process = start()
            self._processes.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._processes.discard(process)

    def close(self) -> bool:
        """Stop the call: no change lands after this, its processes die. True if it made its change."""
        with self._lock:
            self.closed = True
            running = list(self._processes)
        for process in running:
            kill_group(process)
        return self.committed


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def umask() -> int:
    """The process umask, read without changing it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


class Workspace:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else os.getcwd()).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"workspace {self.root} is not a directory")

    def resolve(self, path: str) -> Path:
        """The real path for a model-given path, or ToolError when it leaves the workspace."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("the path is empty")
        if "\x00" in path:
            raise ToolError("the path contains a NUL byte")
        given = Path(path)
        if ".." in given.parts:
            raise ToolError(f"{path!r} is refused: '..' is not allowed in paths; use paths inside the workspace")
        candidate = given if given.is_absolute() else self.root / given
        real = candidate.resolve()
        if not self.contains(real):
            how = "leads through a symlink" if self.contains(Path(os.path.normpath(candidate))) else "is"
            raise ToolError(f"{path!r} is refused: it {how} outside the workspace {self.root}")
        return real

    def contains(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def relative(self, real: Path) -> str:
        rel = real.relative_to(self.root).as_posix()
        return rel or "."

    def write_text(self, real: Path, text: str, call: Call) -> None:
        """Replace the file `real` with `text` all at once, and only while `call` is live.

        The bytes go to a temporary file beside it first; the rename that makes them the file
        is the call's one change. A stopped call leaves the file (and the folders) as they were.
        """
        folder = real.parent if real.parent.is_dir() else self.root
        mode = real.stat().st_mode & 0o7777 if real.is_file() else 0o666 & ~umask()
        handle, temporary = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".squish-tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(text.encode("utf-8"))
            os.chmod(temporary, mode)

            def land() -> None:
                real.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, real)

            call.commit(land)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def run_shell(self, command: str, timeout_s: float, output_cap: int, call: Call) -> str:
        """Run `command` with the workspace as its directory; stdin is closed.

        The process group is killed at the timeout or when `call` is stopped, so children
        cannot outlive it.
        """
        process = call.spawn(
            lambda: subprocess.Popen(
                command,
                shell=True,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process)
            output, _ = process.communicate()
            raise ToolError(
                f"the command timed out after {timeout_s:g} s and was killed; output so far:\n"
                + cap(output.decode("utf-8", "replace"), output_cap)
            ) from None
        finally:
            call.finished(process)
        text = cap(output.decode("utf-8", "replace"), output_cap)
        return f"exit code {process.returncode}\n{text}"


def cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"
