"""Fixtures for the chat app's tests.

`scripted_engine` (tests/helpers.py's ScriptedEngine) replays a fixed answer with fixed stats and
memory readings through real `EventStream`s. It exists only for layout snapshots and app wiring,
which need identical output on every run; every behaviour test drives the real `Engine`.
"""

import asyncio
import time

import pytest
from helpers import ScriptedEngine

from squish.history import History

FIXED_NOW = 1_750_000_000.0


@pytest.fixture
def scripted_engine():
    return ScriptedEngine()


@pytest.fixture
def fixed_history(tmp_path):
    """A history whose clock stands still, so ages on screen never change."""
    history = History(tmp_path / "history.db", clock=lambda: FIXED_NOW)
    yield history
    history.close()


@pytest.fixture
def history(tmp_path):
    history = History(tmp_path / "history.db")
    yield history
    history.close()


@pytest.fixture(scope="module")
def engine():
    """One real engine for a whole test module: the embedded model loads once per app."""
    from squish.engine.engine import Engine

    engine = Engine()
    yield engine
    engine.shutdown()


async def _wait_until(pilot, predicate, timeout: float = 90.0, what: str = "condition") -> None:
    """Pause the pilot until predicate() holds; background work makes a single pause flaky."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {_describe(pilot.app)}")
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def _describe(app) -> str:
    """What the chat screen was doing, so a time-out says why and not only that it happened."""
    screen = getattr(app, "chat_screen", None)
    if screen is None:
        return f"screen {type(app.screen).__name__}"
    answer = screen.answer.text if screen.answer is not None else None
    return (
        f"screen {type(app.screen).__name__}, focused {type(app.focused).__name__}, "
        f"prompt {screen.prompt.text!r}, model_info {screen.model_info is not None}, "
        f"loading {screen.model_loading}, pending {screen.pending is not None}, stream {screen.stream is not None}, "
        f"answer {answer!r}, turns {len(screen.turns)}, last_stats {screen.last_stats!r}, "
        f"notifications {_notifications(app)}"
    )


def _notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


@pytest.fixture
def wait_until():
    return _wait_until


@pytest.fixture
def notifications():
    return _notifications
