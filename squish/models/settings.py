"""The user's settings in `<squish home>/config.json`: the default model, the first-run choice,
the context size and the disk limit of saved KV caches.

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


DEFAULT_KV_CACHE_GB = 2.0


def kv_cache_limit_bytes(home: Path | None = None) -> int:
    """Disk the chats' saved KV caches may use (`kv_cache_gb`, default 2 GB); the least recently
    used are deleted first."""
    value = load(home).get("kv_cache_gb", DEFAULT_KV_CACHE_GB)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        log.warning("ignoring kv_cache_gb=%r in %s: not a size in GB", value, config_path(home))
        value = DEFAULT_KV_CACHE_GB
    return int(value * 1e9)


def context_size(home: Path | None = None) -> int | None:
    """The remembered context size in tokens (`context_size`), or None for the model's window."""
    value = load(home).get("context_size")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def set_context_size(tokens: int | None, home: Path | None = None) -> None:
    update(home, context_size=tokens)
