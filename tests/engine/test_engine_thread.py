"""The engine thread's life: one process-wide thread that never ends, and shutdown's promises.

Why one thread that never ends: on mlx 0.32.4 a thread that imported mlx-lm and then ended
makes the process abort at exit, when that thread's MLX destructors run after the interpreter
began finalizing. The first test reproduces it in a subprocess (made certain by running the
thread's exit destructors late, within a slow interpreter teardown, as a big app's is); the
second shows that squish's engines, used and shut down, leave the same process exiting cleanly.
"""

import subprocess
import sys
import threading
from importlib.metadata import version

import pytest

from squish.engine.engine import ChatRequest, Engine
from squish.engine.events import Done, Error, EventStream
from squish.errors import EngineFailure
from squish.models import store

# A teardown that takes a while, during which an exiting thread's destructors run.
SLOW_TEARDOWN = """
import ctypes, sys, threading, time

class SlowTeardown:
    def __del__(self, sleep=time.sleep):
        sleep(1.0)

holder = SlowTeardown()  # cleared, and so slept in, while the interpreter finalizes
libc = ctypes.CDLL(None)


def delay_this_threads_exit(seconds):
    # Thread-exit destructors run last registered first: this one holds the others back.
    usleep = ctypes.cast(libc.usleep, ctypes.c_void_p)
    libc.__cxa_thread_atexit_impl(usleep, ctypes.c_void_p(int(seconds * 1e6)), None)
"""

THREAD_THAT_ENDS = SLOW_TEARDOWN + """
def work():
    import mlx.core as mx
    import mlx_lm.generate  # what the engine thread does first: it imports mlx-lm

    mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4)))
    delay_this_threads_exit(0.3)

thread = threading.Thread(target=work)
thread.start()
thread.join()
print("the thread ended", flush=True)
"""

ENGINES_SHUT_DOWN = SLOW_TEARDOWN + """
from squish.engine.engine import ChatRequest, Engine
from squish.models import store

for _ in range(2):
    engine = Engine()
    assert store.load(engine, sys.argv[1]).collect().error is None
    answer = engine.generate(ChatRequest([{"role": "user", "content": "hi"}], max_tokens=3, seed=0)).collect()
    assert answer.error is None and answer.stats.generation_tokens >= 1
    assert engine.shutdown()
names = [t.name for t in threading.enumerate() if t.name == "squish-engine"]
print(f"engine threads: {len(names)}", flush=True)
"""


@pytest.mark.skipif(version("mlx") != "0.32.4", reason="the abort was measured on mlx 0.32.4")
def test_mlx_aborts_the_process_when_a_thread_that_imported_mlx_lm_ends_before_exit():
    proc = subprocess.run([sys.executable, "-c", THREAD_THAT_ENDS], capture_output=True, text=True, timeout=90)
    assert "the thread ended" in proc.stdout
    assert proc.returncode == -6 and "terminate called without an active exception" in proc.stderr


def test_engines_used_and_shut_down_leave_the_process_exiting_cleanly(tiny_model):
    proc = subprocess.run(
        [sys.executable, "-c", ENGINES_SHUT_DOWN, str(tiny_model)], capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr
    assert "engine threads: 1" in proc.stdout  # both engines ran on the one process-wide thread


def user(text):
    return [{"role": "user", "content": text}]


class Gate:
    """A logits processor that holds the engine thread on its first call until `release()`."""

    def __init__(self) -> None:
        self.entered, self.released = threading.Event(), threading.Event()

    def __call__(self, tokens, logits):
        self.entered.set()
        assert self.released.wait(60), "the test never released the engine thread"
        return logits

    def release(self) -> None:
        self.released.set()


def drain(stream: EventStream, timeout: float = 30.0) -> list:
    """Every event up to Done, failing (instead of blocking) if Done does not come in time."""
    events = []
    while not events or not isinstance(events[-1], Done):
        events.append(stream.get(timeout=timeout))
    return events


def test_shutdown_refuses_a_request_that_arrives_while_it_waits(tiny_model):
    engine = Engine()
    assert store.load(engine, str(tiny_model)).collect().error is None
    gate = Gate()
    busy = engine.generate(ChatRequest(user("go"), max_tokens=2, seed=0, logits_processors=[gate]))
    assert gate.entered.wait(30)  # the engine thread is inside the generation
    try:
        assert engine.shutdown(timeout=0.05) is False  # still busy: shutdown gave up waiting
        with pytest.raises(EngineFailure, match="shut down"):
            engine.generate(ChatRequest(user("late"), max_tokens=2))
    finally:
        gate.release()
    assert isinstance(drain(busy)[-1], Done)
    assert engine.shutdown() and engine._model is None


def test_a_timed_out_shutdown_stops_the_generation(tiny_model):
    engine = Engine()
    assert store.load(engine, str(tiny_model)).collect().error is None
    gate = Gate()
    request = ChatRequest(user("go"), max_tokens=200, temperature=1.0, seed=3, logits_processors=[gate])
    stream = engine.generate(request)
    assert gate.entered.wait(30)
    stopped = threading.Thread(target=lambda: engine.shutdown(timeout=0.05))
    stopped.start()
    stopped.join(5)  # it waits 0.05 s, cancels what is open, then waits for it
    gate.release()
    stopped.join(30)
    result = drain(stream)
    assert result[-1].finish_reason == "cancelled"
    assert sum(1 for e in result if type(e).__name__ == "Token") <= 2  # stopped within a token
    assert engine._model is None


def test_shutdown_of_a_never_started_engine_refuses_requests():
    engine = Engine()
    assert engine.shutdown() is True
    with pytest.raises(EngineFailure, match="shut down"):
        engine.generate(ChatRequest(user("hi")))
    with pytest.raises(EngineFailure, match="shut down"):
        engine.memory()


def test_a_reader_whose_engine_thread_is_gone_gets_an_error_not_a_hang():
    stream = EventStream(alive=lambda: False)
    events = list(stream)
    assert isinstance(events[0], Error) and "engine thread stopped" in events[0].message
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "error"


def test_a_reader_that_goes_away_cancels_its_request():
    stream = EventStream()
    going = threading.Event()
    going.set()
    assert list(stream.events(stop=going.is_set)) == [] and stream.cancelled


def test_events_already_sent_are_read_before_the_thread_s_absence_counts():
    stream = EventStream(alive=lambda: False)
    stream.put(Done("ok"))
    assert [type(e) for e in stream] == [Done]
