"""Events the engine thread sends back, and the per-request stream that carries them.

Every request gets its own `EventStream`. The engine thread is the only producer;
the caller (CLI, TUI worker, agent loop) is the only consumer. The last event of
every stream is `Done`, also after an `Error`.
"""

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Token:
    text: str
    token_id: int


@dataclass(frozen=True)
class Thinking:
    """Text the model wrote inside <think>...</think>: shown apart, never part of the answer."""

    text: str
    token_id: int


@dataclass(frozen=True)
class Notice:
    """One line for the user about something the engine worked around (a saved KV cache it
    could not use, say); the request goes on."""

    text: str


@dataclass(frozen=True)
class ContextTrimmed:
    """The conversation did not fit: its `left_out` oldest messages (after the system prompt)
    were left out of this request; the prompt is `prompt_tokens` of `context_size`."""

    left_out: int
    prompt_tokens: int
    context_size: int


@dataclass(frozen=True)
class CacheSaved:
    path: str
    bytes: int
    tokens: int


@dataclass(frozen=True)
class Progress:
    """Prompt tokens prefilled so far, out of `total` (tokens reused from the cache excluded)."""

    processed: int
    total: int


@dataclass(frozen=True)
class Status:
    """A human-readable step of a long request (importing, loading, verifying)."""

    text: str


@dataclass(frozen=True)
class Live:
    """Periodic readings while decoding, so a UI can show them before the answer ends."""

    generation_tokens: int
    ttft_ms: float
    decode_tps: float
    active_memory_gb: float
    peak_memory_gb: float
    draft_tokens: int = 0  # prompt-lookup draft tokens checked so far, and accepted
    accepted_tokens: int = 0


@dataclass(frozen=True)
class Stats:
    ttft_ms: float
    prefill_tps: float
    decode_tps: float
    prompt_tokens: int
    cached_tokens: int
    generation_tokens: int
    peak_memory_gb: float
    active_memory_gb: float
    rss_gb: float
    finish_reason: str
    seed: int
    kernels: str = ""  # ModelInfo.kernels of the model that answered
    context_size: int = 0  # the context window this request was fitted to
    kv_cache_bytes: int = 0  # the session's keys and values after the answer
    left_out_messages: int = 0  # oldest messages left out so the conversation fits (context.py)
    thinking_tokens: int = 0  # of generation_tokens, those inside <think>...</think>
    thinking_ms: float = 0.0  # from the first token to the end of thinking
    draft_tokens: int = 0  # tokens proposed by prompt lookup and checked by the model
    accepted_tokens: int = 0  # of those, tokens the model agreed with (kept in the answer)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    def public(self) -> dict:
        """The stats object of `squish --json`."""
        return {
            "ttft_ms": round(self.ttft_ms, 1),
            "prefill_tps": round(self.prefill_tps, 2),
            "decode_tps": round(self.decode_tps, 2),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generation_tokens": self.generation_tokens,
            "peak_memory_gb": round(self.peak_memory_gb, 4),
            "rss_gb": round(self.rss_gb, 4),
            "seed": self.seed,
            "kernels": self.kernels,
            "context_size": self.context_size,
            "kv_cache_bytes": self.kv_cache_bytes,
            "left_out_messages": self.left_out_messages,
            "thinking_tokens": self.thinking_tokens,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "acceptance_rate": round(self.acceptance_rate, 3),
        }


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model, as `Loaded` reports it."""

    name: str
    path: str
    model_type: str
    quantization: str
    context_length: int
    num_layers: int
    size_gb: float
    backend: str
    # The kernels the forward pass runs on (engine/native.py): "cpu-native avx512",
    # "cpu-native avx2", "cpu-native scalar", "cpu-reference" (stock MLX on the CPU), "metal", "cuda".
    kernels: str = "cpu-reference"
    identity: str = ""  # changes when the weights or config do: a saved KV cache must match it
    thinking: bool = False  # the chat template knows <think> blocks
    thinking_switch: bool = False  # the chat template takes enable_thinking
    # The mlx-lm tool parser its chat template calls for (engine/toolformat.py), None without one.
    tool_format: str | None = None


def describe_quantization(config: dict) -> str:
    """A model config's quantization as squish shows it: `Q4 g64`, or the float dtype."""
    quant = config.get("quantization") or config.get("quantization_config")
    if not quant or "bits" not in quant:
        return str(config.get("torch_dtype", "float16"))
    return f"Q{quant['bits']} g{quant.get('group_size', '?')}"


@dataclass(frozen=True)
class Loaded:
    info: ModelInfo


@dataclass(frozen=True)
class Memory:
    active_gb: float
    peak_gb: float
    cache_gb: float
    rss_gb: float
    system_available_gb: float


@dataclass(frozen=True)
class Error:
    message: str
    exit_code: int  # 1: the request was wrong; 2: the system failed


@dataclass(frozen=True)
class Done:
    finish_reason: str


POLL_S = 0.25  # how long a reader waits at a time before it checks whether to go on


class EventStream:
    """One request's events, in order. Thread-safe: one producer, one consumer.

    `alive` says whether the producer (the engine thread) is still there; a reader whose
    producer is gone gets an Error and Done instead of waiting forever.
    """

    def __init__(self, alive: Callable[[], bool] = lambda: True) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._alive = alive
        self.submitted_at = time.perf_counter()

    def put(self, event) -> None:
        self._events.put(event)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def get(self, timeout: float | None = None):
        """The next event; raises queue.Empty after `timeout` seconds."""
        return self._events.get(timeout=timeout)

    def events(
        self, stop: Callable[[], bool] | None = None, wait_s: Callable[[], float] | None = None, idle: bool = False
    ) -> Iterator:
        """The events until Done: the one reading loop that every reader of a stream uses.

        It waits `wait_s()` seconds at a time (POLL_S by default). When `stop()` turns true (the
        reader is going away: the app closes, a newer request replaced this one) the request
        is cancelled and reading ends at once, without Done. When the engine thread is gone,
        the stream ends with an Error and Done. With `idle`, a wait that brought nothing yields
        None, so the reader can do timed work between events (the chat app's frame pacing).
        """
        while True:
            try:
                event = self._events.get(timeout=wait_s() if wait_s is not None else POLL_S)
            except queue.Empty:
                event = None
            if stop is not None and stop():
                self.cancel()
                return
            if event is None and not self._alive():
                event = self._orphaned()
            if event is None:
                if idle:
                    yield None
                continue
            yield event
            if isinstance(event, Done):
                return

    def _orphaned(self):
        try:
            return self._events.get_nowait()  # put before the producer went away
        except queue.Empty:
            self._events.put(Done("error"))
            return Error("the engine thread stopped before this request was answered", 2)

    def __iter__(self) -> Iterator:
        return self.events()

    def collect(self) -> "Result":
        result = Result()
        for event in self:
            result.add(event)
        return result


@dataclass
class Result:
    """Everything a finished stream said, gathered for callers that do not stream."""

    text: str = ""
    thinking: str = ""
    notices: list[str] = field(default_factory=list)
    stats: Stats | None = None
    error: Error | None = None
    finish_reason: str = ""
    loaded: Any = None
    memory: Memory | None = None
    events: list = field(default_factory=list)

    def add(self, event) -> None:
        self.events.append(event)
        if isinstance(event, Token):
            self.text += event.text
        elif isinstance(event, Thinking):
            self.thinking += event.text
        elif isinstance(event, Notice):
            self.notices.append(event.text)
        elif isinstance(event, Stats):
            self.stats = event
        elif isinstance(event, Error):
            self.error = event
        elif isinstance(event, Done):
            self.finish_reason = event.finish_reason
        elif isinstance(event, Loaded):
            self.loaded = event.info
        elif isinstance(event, Memory):
            self.memory = event
