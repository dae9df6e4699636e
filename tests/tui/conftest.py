"""Fixtures for the chat app's tests.

`ScriptedEngine` replays a fixed answer with fixed stats and memory readings through
real `EventStream`s. It exists only for layout snapshots, which need identical output
on every run; every behaviour test drives the real `Engine` with the embedded model.
"""

import asyncio
import time
from dataclasses import dataclass

import pytest

from squish.engine.events import Done, EventStream, Loaded, Memory, Progress, Stats, Status, Token
from squish.history import History

SCRIPTED_ANSWER = (
    "Here is a function that adds two numbers:\n\n"
    "```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "It **returns** the sum of `a` and `b`."
)


@dataclass(frozen=True)
class ScriptedModelInfo:
    name: str = "scripted:1m"
    path: str = "/scripted"
    model_type: str = "llama"
    quantization: str = "Q4 g32"
    context_length: int = 8192
    num_layers: int = 2
    size_gb: float = 0.001
    backend: str = "CPU"


class ScriptedEngine:
    """The Engine's caller-side methods, answering from a script."""

    def __init__(self, answer: str = SCRIPTED_ANSWER) -> None:
        self.answer = answer
        self.requests = []

    def _stream(self, *events) -> EventStream:
        stream = EventStream()
        for event in events:
            stream.put(event)
        return stream

    def load(self, name):
        return self._stream(Status("loading scripted:1m"), Loaded(ScriptedModelInfo()), Done("ok"))

    def memory(self):
        return self._stream(Memory(0.125, 0.25, 0.0, 0.5, 12.0), Done("ok"))

    def generate(self, request):
        self.requests.append(request)
        words = self.answer.split(" ")
        tokens = [Token(word if i == 0 else " " + word, i) for i, word in enumerate(words)]
        stats = Stats(
            ttft_ms=120.0,
            prefill_tps=300.0,
            decode_tps=42.0,
            prompt_tokens=30,
            cached_tokens=0,
            generation_tokens=len(tokens),
            peak_memory_gb=0.25,
            active_memory_gb=0.125,
            rss_gb=0.5,
            finish_reason="stop",
            seed=7,
        )
        return self._stream(Progress(0, 30), Progress(30, 30), *tokens, stats, Done("stop"))

    def drop_session(self, key):
        return self._stream(Done("ok"))

    def unload(self):
        return self._stream(Done("ok"))

    def shutdown(self, timeout: float = 10.0) -> None:
        pass


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
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def _notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


@pytest.fixture
def wait_until():
    return _wait_until


@pytest.fixture
def notifications():
    return _notifications
