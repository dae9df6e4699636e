"""From one generation's EventStream to chat-screen messages, with tokens batched per frame.

`pump` runs in a Textual thread worker. It blocks on the stream's queue (plain Python,
no MLX), so the engine thread never waits for the UI. Tokens are joined and posted at
most once per `frame_s`: however fast the engine decodes, the screen gets at most
about 30 updates a second, and each update costs the same however long the answer is.
"""

import math
import queue
import time
from typing import Callable

from ..engine.events import Done, Error, EventStream, Live, Progress, Stats, Token
from .messages import LiveReading, PrefillProgress, TokensArrived, TurnFinished

FRAME_S = 1 / 30
POLL_S = 0.25  # how often a quiet stream checks whether the worker was cancelled


def pump(
    stream: EventStream,
    post: Callable[[object], object],
    cancelled: Callable[[], bool] = lambda: False,
    frame_s: float = FRAME_S,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Post the stream's events until Done; returns the finish reason.

    When `cancelled()` turns true (the app is closing) the stream is cancelled and the
    pump returns at once: the engine stops within one token or one prefill chunk, and
    nobody is left to read the rest.
    """
    pending: list[str] = []
    last_flush = -math.inf
    stats: Stats | None = None
    error: Error | None = None

    def flush() -> None:
        nonlocal last_flush
        if pending:
            post(TokensArrived("".join(pending), len(pending)))
            pending.clear()
        last_flush = clock()

    while True:
        timeout = max(0.0, last_flush + frame_s - clock()) if pending else POLL_S
        try:
            event = stream.get(timeout)
        except queue.Empty:
            event = None
        if cancelled():
            stream.cancel()
            return "cancelled"
        if isinstance(event, Token):
            pending.append(event.text)
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
        if pending and clock() - last_flush >= frame_s:
            flush()
