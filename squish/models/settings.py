"""The user's settings in `<squish home>/config.json`: the default model and the first-run choice.

A missing or unreadable file means the defaults (the embedded model, first run still to come);
writes replace the file atomically so a crash never leaves half a config.
"""

import json
import logging
import os
import time
from pathlib import Path

from .store import squish_home

log = logging.getLogger("squish.config")
CONFIG = "config.json"


def config_path(home: Path | None = None) -> Path:
    return squish_home(home) / CONFIG


def load(home: Path | None = None) -> dict:
    path = config_path(home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def update(home: Path | None = None, **changes) -> dict:
    """Set keys (a value of None removes the key) and write the file; returns the new config."""
    data = load(home)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CONFIG}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return data


def default_model(home: Path | None = None) -> str | None:
    """The remembered default model, or None for the embedded one."""
    name = load(home).get("default_model")
    return name if isinstance(name, str) and name else None


def set_default_model(name: str | None, home: Path | None = None) -> None:
    update(home, default_model=name)


def record_first_run(choice: str, model: str | None, home: Path | None = None) -> None:
    """Remember the first-run answer: `pull` (with the model offered) or `embedded`."""
    update(home, first_run={"choice": choice, "model": model, "at": time.time()})


def first_run_choice(home: Path | None = None) -> dict | None:
    choice = load(home).get("first_run")
    return choice if isinstance(choice, dict) else None
