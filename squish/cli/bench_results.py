"""Result files of every benchmark: appended to a results directory, never overwritten."""

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def save(result: dict, results_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Append `results_dir/<timestamp>_<name>.json` (the time `now`, UTC, by default the current
    one); an existing file is never overwritten: a second result in the same second gets `-1`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        path = results_dir / f"{stamp}_{name}{suffix}.json"
        try:
            with path.open("x") as handle:
                json.dump(result, handle, indent=2)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free result file name in {results_dir}")


def commit() -> str | None:
    """The git commit measured, with "+dirty" when the tree has changes (None outside a checkout)."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, cwd=here)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
