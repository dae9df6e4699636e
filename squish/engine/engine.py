"""The engine thread: the one thread that makes MLX calls.

Callers put requests on `Engine._requests`; each request carries its own
`EventStream` that the engine thread fills. Everything below `_run` (model,
tokenizer, KV-cache sessions) belongs to the engine thread alone. See
docs/architecture.md for the full handoff.
"""

import gc
import logging
import queue
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import EngineFailure, SquishError, UserError
from .events import (
    CacheSaved,
    ContextTrimmed,
    Done,
    Error,
    EventStream,
    Loaded,
    Memory,
    Notice,
    Stats,
    Status,
)
from .memory import mlx_memory_gb, process_rss_gb, system_available_gb
from .ref import ModelRef

log = logging.getLogger("squish.engine")

MAX_SESSIONS = 4
ROLES = {"system", "user", "assistant", "tool"}
MIN_CONTEXT = 64


@dataclass
class ChatRequest:
    messages: list[dict]
    session: str | None = None  # requests with the same session reuse one KV cache
    max_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    timeout_s: float | None = 300.0
    # Each is called on the engine thread as processor(tokens, logits) -> logits, like mlx-lm's.
    logits_processors: list[Callable] = field(default_factory=list)
    # Called on the engine thread with the loaded tokenizer; returns more logits processors.
    # For processors that need the tokenizer (constrained decoding) without it leaving the thread.
    processor_factory: Callable | None = None
    # Extra keyword arguments for the chat template (e.g. tools=[...], enable_thinking=False).
    template_args: dict = field(default_factory=dict)
    # The context window to fit the conversation in (None: the model's); the oldest turns are
    # left out when it does not fit (squish/engine/context.py).
    context_size: int | None = None
    # A KV cache saved for this session (squish/engine/prompt_cache.py), used when the engine
    # does not hold the session in memory; a file it cannot use is a Notice, never an error.
    cache_file: Path | None = None
    # Prompt-lookup drafts (docs/speculative.md): on by default, they change no token of the
    # answer; off only to measure plain decoding beside them (squish bench, the tests).
    draft: bool = True


def validate(request: ChatRequest) -> None:
    """Checks that need neither the tokenizer nor the model."""
    if not isinstance(request.messages, list) or not request.messages:
        raise UserError("empty prompt: no messages")
    for message in request.messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise UserError(f"each message needs a role among {sorted(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise UserError("message content must be text")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError("the prompt is not valid UTF-8") from None
    if request.messages[-1]["role"] == "user" and not request.messages[-1]["content"].strip():
        raise UserError("empty prompt")
    if not isinstance(request.max_tokens, int) or request.max_tokens < 1:
        raise UserError(f"max_tokens must be a positive integer, got {request.max_tokens!r}")
    if not 0 <= request.temperature <= 5:
        raise UserError(f"temperature must be between 0 and 5, got {request.temperature}")
    if not 0 < request.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {request.top_p}")
    if request.timeout_s is not None and request.timeout_s <= 0:
        raise UserError(f"timeout must be positive, got {request.timeout_s}")
    size = request.context_size
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < MIN_CONTEXT):
        raise UserError(f"the context size must be an integer of at least {MIN_CONTEXT} tokens, got {size!r}")


@dataclass
class Session:
    cache: list
    tokens: list[int]  # exactly the tokens whose keys and values are in `cache`
    left_out: int = 0  # messages the last request left out to fit the context (context.py)


def accounts_for(cache: list, tokens: int) -> bool:
    """Whether every layer cache that counts its tokens (a KVCache `offset`) holds `tokens`.

    Recurrent layers (mlx-lm's ArraysCache, in hybrid models such as lfm2 or qwen3_next) keep a
    state, not a token count: they are accounted for by the token list the engine keeps.
    """
    return all(c.offset == tokens for c in cache if hasattr(c, "offset"))


class EngineThread:
    """The process's one engine thread: every Engine's requests run on it, in arrival order.

    It starts with the first request and never ends. On mlx 0.32.4 a thread that imported
    mlx-lm and then ends makes the process abort at exit when the thread's MLX destructors
    run after the interpreter began finalizing ("terminate called without an active
    exception", reproduced in tests/engine/test_engine_thread.py). A daemon thread blocked on
    its queue at exit never runs them. One thread also means one MLX stream for the process.
    """

    _lock = threading.Lock()
    _queue: queue.Queue = queue.Queue()
    _thread: threading.Thread | None = None

    @classmethod
    def put(cls, item) -> None:
        with cls._lock:
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._serve, name="squish-engine", daemon=True)
                cls._thread.start()
        cls._queue.put(item)

    @classmethod
    def alive(cls) -> bool:
        """False only if the thread died (a bug outside every handler): streams then end."""
        thread = cls._thread
        return thread is None or thread.is_alive()

    @classmethod
    def _serve(cls) -> None:
        import mlx.core as mx

        stream = mx.new_stream(mx.default_device())
        while True:
            engine, kind, payload, events = cls._queue.get()
            with mx.stream(stream):
                engine._handle(kind, payload, events)


class Engine:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _closed and _open
        self._closed = False  # shutdown() was called: new requests are refused
        self._used = False  # a request was submitted (so there may be a model to free)
        self._open: set[EventStream] = set()  # submitted, not Done yet
        self._stopped = threading.Event()  # the model is freed after shutdown()
        # Engine-thread state: touched only by the handlers, on the engine thread.
        self._model = None
        self._tokenizer = None
        self._info = None
        self._row_cost: float | None = None  # a checked row's cost, as the model's last request measured it
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # Caller side: any thread.

    def _submit(self, kind: str, payload=None) -> EventStream:
        stream = EventStream(alive=EngineThread.alive)
        with self._lock:  # a request is refused or queued before shutdown's own item: never lost
            if self._closed:
                raise EngineFailure("the engine is shut down")
            self._open.add(stream)
            self._used = True
            EngineThread.put((self, kind, payload, stream))
        return stream

    def load(self, ref: ModelRef) -> EventStream:
        """Load `ref` in place of the current model (squish.models.store.resolve makes refs from names)."""
        if not isinstance(ref, ModelRef):
            raise TypeError(f"Engine.load takes a ModelRef, got {type(ref).__name__}")
        return self._submit("load", ref)

    def unload(self) -> EventStream:
        return self._submit("unload")

    def generate(self, request: ChatRequest) -> EventStream:
        return self._submit("generate", request)

    def memory(self) -> EventStream:
        return self._submit("memory")

    def score(self, request) -> EventStream:
        """Log-likelihoods of continuations after a prompt (scoring.ScoreRequest -> scoring.Scores)."""
        return self._submit("score", request)

    def drop_session(self, session: str) -> EventStream:
        return self._submit("drop_session", session)

    def save_session(self, session: str, path: Path, limit_bytes: int) -> EventStream:
        """Write the session's KV cache to `path` (squish/engine/prompt_cache.py), then drop the
        least recently used caches beside it until they hold at most `limit_bytes`. Streams
        `CacheSaved`, a `Notice` when there is nothing to save or it is over the limit, or an
        `Error` (exit code 2) when the disk refuses it."""
        return self._submit("save_session", (session, Path(path), limit_bytes))

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Refuse new requests, finish the queued ones, free the model; True once it is freed.

        After `timeout` seconds the requests still open are cancelled (each stops within a
        token or a prefill chunk), and shutdown waits up to `timeout` more for them.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._used:
                    EngineThread.put((self, "close", None, EventStream()))
                else:
                    self._stopped.set()  # never used: nothing to free
        if self._stopped.wait(timeout):
            return True
        with self._lock:
            open_streams = list(self._open)
        for stream in open_streams:
            stream.cancel()
        return self._stopped.wait(timeout)

    # Engine thread.

    def _handle(self, kind: str, payload, stream: EventStream) -> None:
        """Run one request to its Done; every failure becomes an Error event, never an exception."""
        handlers = {
            "load": self._load,
            "unload": self._unload,
            "generate": self._generate,
            "memory": self._memory,
            "drop_session": self._drop_session,
            "close": self._close,
            "save_session": self._save_session,
            "score": self._score,
        }
        finish = "ok"
        try:
            if stream.cancelled:
                finish = "cancelled"  # cancelled while it waited in the queue: nothing to do
            else:
                finish = handlers[kind](payload, stream) or "ok"
        except SquishError as exc:
            finish = "error"
            stream.put(Error(str(exc), exc.exit_code))
        except Exception as exc:  # the engine thread must survive every failed request
            log.exception("engine request %s failed", kind)
            finish = "error"
            stream.put(Error(f"{type(exc).__name__}: {exc}", 2))
        with self._lock:
            self._open.discard(stream)
        stream.put(Done(finish))

    def _close(self, _payload, stream: EventStream) -> None:
        self._unload(None, stream)
        self._stopped.set()

    def _load(self, ref: ModelRef, stream: EventStream) -> None:
        from . import gguf, loader

        if ref.gguf is not None:
            stream.put(Status(f"importing {ref.name} (once)"))
            gguf.import_model(ref)
        self._unload(None, stream)
        stream.put(Status(f"loading {ref.name}"))
        self._model, self._tokenizer, self._info = loader.load(ref.name, ref.path)
        log.info("loaded %s from %s (%s, %s)", ref.name, ref.path, self._info.quantization, self._info.kernels)
        stream.put(Loaded(self._info))

    def _unload(self, _payload, stream: EventStream) -> None:
        import mlx.core as mx

        if self._model is None:
            return
        self._model = self._tokenizer = self._info = self._row_cost = None
        self._sessions.clear()
        gc.collect()
        mx.clear_cache()

    def _drop_session(self, session: str, stream: EventStream) -> None:
        self._sessions.pop(session, None)

    def _save_session(self, payload: tuple, stream: EventStream) -> str:
        from . import prompt_cache

        key, path, limit = payload
        session = self._sessions.get(key)
        if session is None or not session.tokens or self._info is None:
            stream.put(Notice("no KV cache to save for this chat"))
            return "none"
        size = prompt_cache.nbytes(session.cache, saved=True)
        if size > limit:
            prompt_cache.remove(path)  # an older, shorter cache of this chat would be stale
            stream.put(Notice(f"the KV cache ({size / 1e6:.0f} MB) is over the limit ({limit / 1e6:.0f} MB): not saved"))
            return "none"
        try:
            written = prompt_cache.save(path, session.cache, session.tokens, self._info.identity, session.left_out)
        except OSError as exc:
            raise EngineFailure(f"cannot save the KV cache to {path}: {exc.strerror or exc}") from None
        prompt_cache.prune(path.parent, limit, keep=path)
        stream.put(CacheSaved(str(path), written, len(session.tokens)))
        return "ok"

    def _take_session(self, request: ChatRequest, stream: EventStream) -> Session:
        """The request's session: held in memory, else restored from its cache file, else new."""
        from mlx_lm.models.cache import make_prompt_cache

        from . import prompt_cache

        session = self._sessions.get(request.session) if request.session else None
        if session is None and request.cache_file is not None and Path(request.cache_file).exists():
            try:
                restored = prompt_cache.load(Path(request.cache_file), self._info.identity)
                session = Session(restored.cache, restored.tokens, restored.left_out)
            except prompt_cache.Rejected as exc:
                stream.put(Notice(f"{exc}: the history is prefilled instead"))
        return session or Session(make_prompt_cache(self._model), [])
    def _score(self, request, stream: EventStream) -> None:
        from .scoring import score

        chat = ChatRequest(request.messages, session=request.session, timeout_s=request.timeout_s)
        validate(chat)
        if self._model is None:
            raise EngineFailure("no model is loaded")
        session = self._take_session(chat, stream)
        try:
            score(self, request, stream, session)
        except Exception:
            self._sessions.pop(request.session, None)  # never reuse a cache we cannot account for
            raise
        if not accounts_for(session.cache, len(session.tokens)):
            self._sessions.pop(request.session, None)


    def _memory(self, _payload, stream: EventStream) -> None:
        active, peak, cache = mlx_memory_gb()
        stream.put(Memory(active, peak, cache, process_rss_gb(), system_available_gb()))

    def _session(self, key: str | None, tokens: list[int], session: Session) -> tuple[Session, int]:
        """The KV cache for this prompt and how many of its leading tokens the cache already holds."""
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        common = 0
        for cached, new in zip(session.tokens, tokens):
            if cached != new:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # the last prompt token must run to give logits
        extra = len(session.tokens) - common
        if extra > 0:
            if can_trim_prompt_cache(session.cache):
                trim_prompt_cache(session.cache, extra)
                session.tokens = session.tokens[:common]
            else:
                session, common = Session(make_prompt_cache(self._model), [], session.left_out), 0
        if key:
            self._sessions.pop(key, None)
            self._sessions[key] = session  # the most recently used goes last
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session, common

    def _generate(self, request: ChatRequest, stream: EventStream) -> str:
        import mlx.core as mx

        from . import context, prompt_cache
        from .generate import Decoder
        from .thinking import CLOSE, OPEN, ThinkSplitter, opens_thinking

        validate(request)
        if self._model is None:
            raise EngineFailure("no model is loaded")
        model, tokenizer, info = self._model, self._tokenizer, self._info
        deadline = stream.submitted_at + request.timeout_s if request.timeout_s else float("inf")

        def render(messages: list[dict]) -> list[int]:
            return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **request.template_args))

        context_size = min(request.context_size or info.context_length, info.context_length)
        session = self._take_session(request, stream)
        fitted = context.fit(render, request.messages, context_size, request.max_tokens, session.left_out)
        tokens = fitted.tokens
        session.left_out = fitted.left_out
        if fitted.left_out:
            stream.put(ContextTrimmed(fitted.left_out, len(tokens), context_size))
        max_tokens = min(request.max_tokens, context_size - len(tokens))
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        mx.random.seed(seed)
        log.debug("generate: %d prompt tokens, max_tokens %d, seed %d", len(tokens), max_tokens, seed)

        session, cached = self._session(request.session, tokens, session)
        cache = session.cache
        mx.reset_peak_memory()
        splitter = None
        if info.thinking:
            tags = getattr(tokenizer, "think_start", None) or OPEN, getattr(tokenizer, "think_end", None) or CLOSE
            splitter = ThinkSplitter(opens_thinking(tokenizer.decode(tokens[-8:]), tags[0]), *tags)
        decoder = Decoder(
            model, tokenizer, request, stream, session, deadline, request.draft, splitter, self._row_cost
        )
        try:
            outcome = decoder.run(tokens[cached:], max_tokens, seed)
        except Exception:
            self._sessions.pop(request.session, None)
            raise
        if (row_cost := decoder.drafter.costs.measured()) is not None:
            self._row_cost = row_cost
        finish, t_start, t_first, t_last = outcome.finish, outcome.t_start, outcome.t_first, outcome.t_last
        new_tokens, generated = tokens[cached:], outcome.generated
        mx.eval([c.state for c in cache])
        if finish == "nan" or not accounts_for(cache, len(session.tokens)):
            self._sessions.pop(request.session, None)  # never reuse a cache we cannot account for
        prefill_s = max(t_first - t_start, 1e-9)
        decode_s = t_last - t_first
        active, peak, _ = mlx_memory_gb()
        stream.put(
            Stats(
                ttft_ms=(t_first - stream.submitted_at) * 1000,
                prefill_tps=len(new_tokens) / prefill_s,
                decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0,
                prompt_tokens=len(tokens),
                cached_tokens=cached,
                generation_tokens=generated,
                peak_memory_gb=peak,
                active_memory_gb=active,
                rss_gb=process_rss_gb(),
                finish_reason=finish,
                seed=seed,
                kernels=info.kernels,
                context_size=context_size,
                kv_cache_bytes=prompt_cache.nbytes(cache),
                left_out_messages=fitted.left_out,
                thinking_tokens=outcome.thinking_tokens,
                thinking_ms=max(outcome.thinking_until - t_first, 0.0) * 1000 if outcome.thinking_tokens else 0.0,
                draft_tokens=outcome.drafted,
                accepted_tokens=outcome.accepted,
            )
        )
        if finish == "timeout":
            stream.put(Error(f"the request timed out after {request.timeout_s:g} s", 2))
        return finish
