"""The workspace sandbox: file tools stay under one root, the shell runs there with a timeout.

Paths from the model are refused with a `ToolError` (which the model sees) when they hold a
`..` component, are absolute outside the root, or resolve (symlinks followed) outside it.
The shell is not contained: it runs in the root, without stdin, under a timeout and an
output cap, and it is a risky tool that needs the user's approval.
"""

import os
import signal
import subprocess
import threading
from pathlib import Path


class ToolError(Exception):
    """A failure the model should read and can act on (bad path, missing file, timeout)."""


class Workspace:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else os.getcwd()).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"workspace {self.root} is not a directory")
        # Shell processes still running, so an abort can kill them.
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

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

    def run_shell(self, command: str, timeout_s: float, output_cap: int) -> str:
        """Run `command` with the workspace as its directory; stdin is closed.

        The process group is killed at the timeout, so children cannot outlive it.
        """
        process = subprocess.Popen(
            command,
            shell=True,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._processes.add(process)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(process)
            output, _ = process.communicate()
            raise ToolError(
                f"the command timed out after {timeout_s:g} s and was killed; output so far:\n"
                + cap(output.decode("utf-8", "replace"), output_cap)
            ) from None
        finally:
            with self._lock:
                self._processes.discard(process)
        text = cap(output.decode("utf-8", "replace"), output_cap)
        return f"exit code {process.returncode}\n{text}"

    def kill_all(self) -> None:
        """Stop every running shell command (the user aborted the agent)."""
        with self._lock:
            running = list(self._processes)
        for process in running:
            self._kill(process)

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"
