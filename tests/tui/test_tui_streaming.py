"""The worker-side pump from an engine EventStream to batched chat-screen messages."""

import threading
import time

from squish.engine.events import Done, Error, EventStream, Live, Progress, Stats, Token
from squish.tui.messages import LiveReading, PrefillProgress, TokensArrived, TurnFinished
from squish.tui.streaming import FRAME_S, MAX_FRAME_S, UI_BUDGET, Pacing, pump

STATS = Stats(1.0, 2.0, 3.0, 4, 0, 5, 0.1, 0.1, 0.2, "stop", 1)


def test_tokens_arriving_together_are_posted_as_one_batch():
    stream = EventStream()
    for i in range(50):
        stream.put(Token(f"t{i} ", i))
    stream.put(STATS)
    stream.put(Done("stop"))
    posted = []
    assert pump(stream, posted.append) == "stop"
    batches = [m for m in posted if isinstance(m, TokensArrived)]
    assert "".join(b.text for b in batches) == "".join(f"t{i} " for i in range(50))
    assert sum(b.tokens for b in batches) == 50
    assert len(batches) <= 2  # the first token goes out at once, the rest in the next frame
    assert isinstance(posted[-1], TurnFinished) and posted[-1].stats == STATS and posted[-1].error is None


def test_a_fast_stream_is_posted_at_most_once_per_frame():
    stream = EventStream()
    duration = 0.6

    def produce():
        end = time.monotonic() + duration
        i = 0
        while time.monotonic() < end:
            stream.put(Token("x", i))
            i += 1
            time.sleep(0.001)
        stream.put(Done("length"))

    producer = threading.Thread(target=produce)
    posted, times = [], []

    def post(message):
        posted.append(message)
        times.append(time.monotonic())

    producer.start()
    pump(stream, post)
    producer.join()
    batch_times = [t for t, m in zip(times, posted) if isinstance(m, TokensArrived)]
    assert len(batch_times) <= duration / FRAME_S + 2
    gaps = [b - a for a, b in zip(batch_times, batch_times[1:-1])]  # the last batch is Done's flush
    assert min(gaps) >= FRAME_S * 0.9
    assert sum(len(m.text) for m in posted if isinstance(m, TokensArrived)) == sum(
        m.tokens for m in posted if isinstance(m, TokensArrived)
    )


def test_a_slow_stream_posts_each_token_without_waiting_for_a_frame():
    stream = EventStream()
    posted, delays = [], []

    def produce():
        for i in range(3):
            time.sleep(0.1)
            stream.put(Token(f"{i}", i))
            sent = time.monotonic()
            while len([m for m in posted if isinstance(m, TokensArrived)]) <= i:
                time.sleep(0.001)
            delays.append(time.monotonic() - sent)
        stream.put(Done("stop"))

    producer = threading.Thread(target=produce)
    producer.start()
    pump(stream, posted.append)
    producer.join()
    assert [m.text for m in posted if isinstance(m, TokensArrived)] == ["0", "1", "2"]
    assert max(delays) < FRAME_S + 0.05


def test_progress_live_and_error_are_forwarded():
    stream = EventStream()
    live = Live(3, 100.0, 9.0, 0.1, 0.2)
    for event in (Progress(0, 10), Progress(10, 10), Token("a", 1), live, Error("boom", 2), Done("error")):
        stream.put(event)
    posted = []
    assert pump(stream, posted.append) == "error"
    assert [type(m) for m in posted if not isinstance(m, TokensArrived)] == [
        PrefillProgress,
        PrefillProgress,
        LiveReading,
        TurnFinished,
    ]
    finished = posted[-1]
    assert finished.error.message == "boom" and finished.finish_reason == "error" and finished.stats is None


def test_a_cancelled_worker_cancels_the_stream_and_returns():
    stream = EventStream()
    stream.put(Token("a", 1))
    posted = []
    started = time.monotonic()
    assert pump(stream, posted.append, cancelled=lambda: True) == "cancelled"
    assert stream.cancelled and time.monotonic() - started < 1.0


def test_pacing_widens_the_frame_while_drawing_is_expensive_and_narrows_it_after():
    wall, cpu = [0.0], [0.0]
    pacing = Pacing(clock=lambda: wall[0], cpu=lambda: cpu[0])

    def batch(seconds: float, busy: float) -> None:
        wall[0] += seconds
        cpu[0] += seconds * busy
        pacing.observe()

    pacing.start()
    for _ in range(30):
        batch(0.15, 0.08)  # drawing takes 8% of the UI thread: twice the budget
    assert pacing.frame_s == MAX_FRAME_S and pacing.share > UI_BUDGET
    for _ in range(30):
        batch(0.03, 0.005)
    assert pacing.frame_s == FRAME_S


def test_the_pump_follows_the_pacing_interval():
    stream = EventStream()
    pacing = Pacing()
    pacing.frame_s = 0.2

    def produce():
        for i in range(60):
            stream.put(Token("x", i))
            time.sleep(0.01)
        stream.put(Done("length"))

    producer = threading.Thread(target=produce)
    posted = []
    producer.start()
    pump(stream, posted.append, pacing=pacing)
    producer.join()
    batches = [m for m in posted if isinstance(m, TokensArrived)]
    assert sum(b.tokens for b in batches) == 60
    assert len(batches) <= 0.6 / 0.2 + 3
