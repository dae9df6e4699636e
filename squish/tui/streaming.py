"""From one generation's EventStream to chat-screen messages, with tokens batched per frame.

`pump` runs in a Textual thread worker. It blocks on the stream's queue (plain Python,
no MLX), so the engine thread never waits for the UI. Tokens are joined and posted at
most once per frame: however fast the engine decodes, the screen gets at most about 30
updates a second (fewer where drawing is slow, see `Pacing`), and each update costs the
same however long the answer is (see widgets/message.py).
"""

import math
import time
from typing import Callable

from ..engine.events import (
    POLL_S,
    ContextTrimmed,
    Done,
    Error,
    EventStream,
    Live,
    Notice,
    Progress,
    Stats,
    Thinking,
    Token,
)
from .messages import EngineNotice, LiveReading, PrefillProgress, ThinkingArrived, TokensArrived, TurnFinished

FRAME_S = 1 / 30
MAX_FRAME_S = 0.25
UI_BUDGET = 0.04  # share of the UI thread's wall time that drawing an answer may take


class Pacing:
    """The pump's interval between batches, set from what drawing them costs the UI thread.

    Drawing competes with the engine thread for the GIL and, on the CPU backend, for the
    cores MLX computes on: here a Python thread busy 7% of the time cut decode by ~10%.
    So the interval starts at one frame (FRAME_S) and widens, up to MAX_FRAME_S, while the
    UI thread works more than UI_BUDGET of the time; it narrows again when drawing is cheap.
    `observe` runs on the UI thread for each batch; the pump only reads `frame_s`.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, cpu: Callable[[], float] = time.thread_time):
        self.frame_s = FRAME_S
        self.share = 0.0
        self._clock, self._cpu = clock, cpu
        self._last: tuple[float, float] | None = None

    def start(self) -> None:
        self._last = None

    def observe(self) -> None:
        now, cpu = self._clock(), self._cpu()
        if self._last is not None and now > self._last[0]:
            share = (cpu - self._last[1]) / (now - self._last[0])
            self.share = 0.7 * self.share + 0.3 * share
            if self.share > UI_BUDGET:
                self.frame_s = min(MAX_FRAME_S, self.frame_s * 1.25)
            elif self.share < UI_BUDGET / 2:
                self.frame_s = max(FRAME_S, self.frame_s / 1.25)
        self._last = (now, cpu)


def pump(
    stream: EventStream,
    post: Callable[[object], object],
    cancelled: Callable[[], bool] = lambda: False,
    pacing: Pacing | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Post the stream's events until Done; returns the finish reason.

    When `cancelled()` turns true (the app is closing) the stream is cancelled and the
    pump returns at once: the engine stops within one token or one prefill chunk, and
    nobody is left to read the rest.
    """
    pending: list[str] = []
    thinking: list[str] = []  # a <think> block's text, batched the same way; it comes first
    last_flush = -math.inf
    stats: Stats | None = None
    error: Error | None = None

    def flush() -> None:
        nonlocal last_flush
        if thinking:
            post(ThinkingArrived("".join(thinking), len(thinking)))
            thinking.clear()
        if pending:
            post(TokensArrived("".join(pending), len(pending)))
            pending.clear()
        last_flush = clock()

    pacing = pacing or Pacing()

    def wait_s() -> float:
        return max(0.0, last_flush + pacing.frame_s - clock()) if pending or thinking else POLL_S

    for event in stream.events(stop=cancelled, wait_s=wait_s, idle=True):
        if isinstance(event, Token):
            pending.append(event.text)
        elif isinstance(event, Thinking):
            thinking.append(event.text)
        elif isinstance(event, Notice):
            post(EngineNotice(event.text))
        elif isinstance(event, ContextTrimmed):
            text = f"{event.left_out} earlier messages are left out of the model's context ({event.context_size} tokens)"
            post(EngineNotice(text, event.left_out, event.context_size))
        elif isinstance(event, Live):
            post(LiveReading(event))
        elif isinstance(event, Progress):
            post(PrefillProgress(event.processed, event.total))
        elif isinstance(event, Stats):
            stats = event
        elif isinstance(event, Error):
            error = event
        elif isinstance(event, Done):
            flush()
            post(TurnFinished(event.finish_reason, stats, error))
            return event.finish_reason
        if (pending or thinking) and clock() - last_flush >= pacing.frame_s:
            flush()
    return "cancelled"  # the reader went away: the stream is cancelled and nobody reads the rest
