"""Integration tests of the engine thread: the real embedded model and tiny random-weight models."""

import threading
import time

import pytest

from squish.engine.engine import ChatRequest, Engine
from squish.engine.events import Done, Live, Progress, Token
from squish.models import store


def user(text):
    return [{"role": "user", "content": text}]


# The real embedded model (greedy, short outputs).


def test_capital_of_france_is_paris(engine):
    result = engine.generate(ChatRequest(user("What is the capital of France?"), temperature=0, max_tokens=12)).collect()
    assert result.error is None
    assert "Paris" in result.text
    stats = result.stats
    assert stats.finish_reason == "stop"
    assert stats.ttft_ms > 0 and stats.prefill_tps > 0 and stats.decode_tps > 0
    assert stats.prompt_tokens > 0 and stats.generation_tokens > 0
    assert 0 < stats.peak_memory_gb < 1 and stats.rss_gb > 0


def test_second_turn_prefills_only_new_tokens(engine):
    history = user("What is the capital of France?")
    first = engine.generate(ChatRequest(history, session="chat", temperature=0, max_tokens=12)).collect()
    assert first.stats.cached_tokens == 0
    history += [{"role": "assistant", "content": first.text}, *user("And of Italy?")]
    second = engine.generate(ChatRequest(history, session="chat", temperature=0, max_tokens=12)).collect()
    assert "Rome" in second.text
    # Everything of turn 1 (prompt, answer, end-of-turn token) came from the cache.
    assert second.stats.cached_tokens == first.stats.prompt_tokens + first.stats.generation_tokens + 1
    progress = [e for e in second.events if isinstance(e, Progress)]
    assert progress[-1].total == second.stats.prompt_tokens - second.stats.cached_tokens


def test_events_arrive_in_order_and_done_is_last(engine):
    events = list(engine.generate(ChatRequest(user("Say yes."), temperature=0, max_tokens=3)))
    assert isinstance(events[0], Progress)
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, Token) for e in events)


def test_prompt_longer_than_context_names_both_numbers_and_engine_recovers(engine):
    result = engine.generate(ChatRequest(user("word " * 9000), max_tokens=4)).collect()
    assert result.error is not None and result.error.exit_code == 1
    assert "context window is 8192" in result.error.message
    assert "9" in result.error.message.split("tokens")[0]
    again = engine.generate(ChatRequest(user("What is the capital of France?"), temperature=0, max_tokens=8))
    assert "Paris" in again.collect().text


def test_invalid_request_gets_an_error_event_then_the_next_one_works(engine):
    bad = engine.generate(ChatRequest(user(""), max_tokens=4)).collect()
    assert bad.error.message == "empty prompt" and bad.finish_reason == "error"
    assert engine.generate(ChatRequest(user("Hi"), temperature=0, max_tokens=2)).collect().error is None


def past(seconds: float):
    """A logits processor that makes each step take longer than `seconds`: a deadline passes."""

    def slow(tokens, logits):
        time.sleep(seconds)
        return logits

    return slow


def test_timeout_stops_a_request_and_reports_it(tiny_engine):
    request = ChatRequest(user("go"), max_tokens=200, timeout_s=0.05, logits_processors=[past(0.1)])
    result = tiny_engine.generate(request).collect()
    assert result.finish_reason == "timeout"
    assert result.stats.finish_reason == "timeout" and result.stats.generation_tokens <= 1
    assert "timed out after 0.05 s" in result.error.message


# Tiny random-weight models: the mechanics, fast.


def test_cancel_takes_effect_within_one_token(tiny_engine):
    stream = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=1, max_tokens=4000))
    seen = 0
    produced_before_cancel = None
    for event in stream:
        if isinstance(event, Token):
            seen += 1
            if seen == 5:
                stream.cancel()
                # The engine runs ahead of a slow reader: what it queued before the cancel is
                # not late. (Counting all queued events only loosens the bound by the non-tokens.)
                produced_before_cancel = seen + stream._events.qsize()
    assert stream.cancelled
    assert seen - produced_before_cancel <= 1
    assert event.finish_reason == "cancelled"


def test_cancel_from_another_thread(tiny_engine):
    stream = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=2, max_tokens=4000))
    first = threading.Event()
    canceller = threading.Thread(target=lambda: first.wait(30) and stream.cancel())
    canceller.start()
    events = []
    for event in stream:
        events.append(event)
        if isinstance(event, Token):
            first.set()  # the answer is streaming: the other thread cancels it now
    canceller.join(5)
    assert events[-1].finish_reason == "cancelled"
    assert sum(isinstance(e, Token) for e in events) < 4000


def test_cancel_during_prefill_stops_before_the_next_chunk(tiny_engine):
    """The request is cancelled after it started, while it prefills a long prompt (many chunks)."""
    started = threading.Event()
    cancelled = threading.Event()

    def factory(tokenizer):  # runs on the engine thread just before the prefill loop
        started.set()
        assert cancelled.wait(30)
        return []

    request = ChatRequest(user("word " * 1500), max_tokens=4, processor_factory=factory)
    stream = tiny_engine.generate(request)
    assert started.wait(30)
    stream.cancel()
    cancelled.set()
    result = stream.collect()
    progress = [e for e in result.events if isinstance(e, Progress)]
    assert result.finish_reason == "cancelled" and result.stats.generation_tokens == 0
    assert progress[-1].processed < progress[-1].total and progress[-1].total > 1500
    assert not any(isinstance(e, Token) for e in result.events)
    again = tiny_engine.generate(ChatRequest(user("go"), max_tokens=2, seed=0)).collect()
    assert again.error is None and again.stats.generation_tokens >= 1


def test_the_least_recently_used_session_is_dropped_first(tiny_engine):
    from squish.engine.engine import MAX_SESSIONS

    def turn(session: str):
        request = ChatRequest(user(f"session {session}"), session=f"lru-{session}", max_tokens=1, seed=0)
        return tiny_engine.generate(request).collect().stats.cached_tokens

    names = [str(i) for i in range(MAX_SESSIONS)]
    assert [turn(name) for name in names] == [0] * MAX_SESSIONS
    assert turn(names[0]) > 0  # kept, and now the most recently used
    assert turn("new") == 0  # one session too many: the least recently used (names[1]) goes
    assert turn(names[1]) == 0
    assert turn(names[0]) > 0


def test_same_seed_same_text_and_live_events(tiny_engine):
    request = dict(messages=user("go"), temperature=1.0, top_p=0.9, seed=42, max_tokens=300)
    a = tiny_engine.generate(ChatRequest(**request)).collect()
    b = tiny_engine.generate(ChatRequest(**request)).collect()
    assert a.text == b.text and a.stats.seed == b.stats.seed == 42
    c = tiny_engine.generate(ChatRequest(**{**request, "seed": 43})).collect()
    assert c.text != a.text


def test_max_tokens_bounds_the_answer(tiny_engine):
    result = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=5, max_tokens=7)).collect()
    assert result.stats.generation_tokens <= 7
    assert result.finish_reason in ("length", "stop")


def test_stop_string_ends_generation_without_the_stop_text(tiny_engine):
    free = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=9, max_tokens=40)).collect()
    stop = free.text[10:14]
    assert stop.strip()
    cut = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=9, max_tokens=40, stop=(stop,))).collect()
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert free.text.startswith(cut.text)


def test_greedy_loop_on_random_weights_is_stopped_as_repetition(tiny_engine):
    result = tiny_engine.generate(ChatRequest(user("go"), temperature=0, max_tokens=2000)).collect()
    assert result.finish_reason == "repetition"
    assert result.stats.finish_reason == "repetition"
    assert result.stats.generation_tokens < 2000


def test_changed_history_trims_the_cache_to_the_common_prefix(tiny_engine):
    base = [{"role": "system", "content": "You are terse."}]
    first = base + user("alpha beta gamma")
    one = tiny_engine.generate(ChatRequest(first, session="s", temperature=0, max_tokens=3)).collect()
    edited = base + user("alpha delta")
    two = tiny_engine.generate(ChatRequest(edited, session="s", temperature=0, max_tokens=3)).collect()
    assert 0 < two.stats.cached_tokens < one.stats.prompt_tokens
    # The trimmed cache gives the same answer as a fresh one.
    fresh = tiny_engine.generate(ChatRequest(edited, temperature=0, max_tokens=3)).collect()
    assert two.text == fresh.text


def test_live_events_while_decoding(tiny_engine):
    stream = tiny_engine.generate(ChatRequest(user("go"), temperature=1.0, seed=3, max_tokens=4000))
    lives = []
    for event in stream:
        if isinstance(event, Live):
            lives.append(event)
            if len(lives) == 2:
                stream.cancel()
    assert lives and lives[-1].generation_tokens > 0 and lives[-1].active_memory_gb > 0


def test_nan_logits_stop_the_answer(tmp_path, home):
    from helpers import build_tiny_model

    # Finite float16 weights whose activations overflow to inf, then NaN, in the logits.
    model_dir = build_tiny_model(tmp_path / "overflow", home, scale=1e4, dtype="float16")
    eng = Engine()
    try:
        assert store.load(eng, str(model_dir)).collect().error is None
        result = eng.generate(ChatRequest(user("go"), temperature=0, max_tokens=20)).collect()
        assert result.finish_reason == "nan"
        assert result.stats.finish_reason == "nan"
    finally:
        eng.shutdown()


def test_generate_before_load_is_an_error_and_the_thread_survives():
    eng = Engine()
    try:
        result = eng.generate(ChatRequest(user("hi"))).collect()
        assert result.error.message == "no model is loaded" and result.error.exit_code == 2
        assert eng.memory().collect().memory.rss_gb > 0
    finally:
        eng.shutdown()


def test_memory_reading_and_unload_frees_the_model(tiny_model):
    eng = Engine()
    try:
        store.load(eng, str(tiny_model)).collect()
        loaded = eng.memory().collect().memory.active_gb
        eng.unload().collect()
        after = eng.memory().collect().memory.active_gb
        assert loaded > after
    finally:
        eng.shutdown()


def test_shutdown_frees_the_model_and_refuses_new_requests(tiny_model):
    from squish.errors import EngineFailure

    eng = Engine()
    store.load(eng, str(tiny_model)).collect()
    eng.shutdown()
    assert eng._model is None
    with pytest.raises(EngineFailure, match="shut down"):
        eng.generate(ChatRequest(user("hi")))
    eng.shutdown()  # a second call is harmless


def test_ten_turn_chat_prefills_only_each_new_message(tiny_engine):
    history = [{"role": "system", "content": "You are terse."}]
    prefilled = []
    for turn in range(10):
        history.append({"role": "user", "content": f"Question number {turn} about cats."})
        result = tiny_engine.generate(ChatRequest(list(history), session="ten", temperature=0, max_tokens=6)).collect()
        history.append({"role": "assistant", "content": result.text})
        prefilled.append(result.stats.prompt_tokens - result.stats.cached_tokens)
    assert result.stats.prompt_tokens > 3 * prefilled[0]
    assert max(prefilled[1:]) <= prefilled[0]


def test_prompt_text_never_logged_at_info_or_above(tiny_engine, caplog):
    secret = "my bank password is hunter2"
    with caplog.at_level("DEBUG", logger="squish"):
        tiny_engine.generate(ChatRequest(user(secret), temperature=0, max_tokens=3)).collect()
        tiny_engine.generate(ChatRequest(user(""), max_tokens=3)).collect()
    assert all(secret not in r.getMessage() for r in caplog.records if r.levelno >= 20)
    assert any(r.name == "squish.engine" for r in caplog.records)


@pytest.fixture(scope="module")
def hybrid_engine(tmp_path_factory, home):
    from helpers import TINY_HYBRID, build_tiny_model

    model_dir = build_tiny_model(tmp_path_factory.mktemp("hybrid") / "tiny-lfm2", home, config=TINY_HYBRID)
    eng = Engine()
    assert store.load(eng, str(model_dir)).collect().error is None
    yield eng
    eng.shutdown()


def test_a_model_whose_first_cache_is_an_arrays_cache_streams_stats_and_reuses_its_session(hybrid_engine):
    """lfm2's first layer is a convolution with an ArraysCache, which has no `offset`."""
    first = hybrid_engine.generate(ChatRequest(user("hi"), session="hybrid", max_tokens=1, seed=0)).collect()
    assert first.error is None and first.stats is not None and first.stats.generation_tokens == 1
    history = [*user("hi"), {"role": "assistant", "content": "Paris"}, *user("and?")]
    second = hybrid_engine.generate(ChatRequest(history, session="hybrid", max_tokens=2, seed=0)).collect()
    assert second.error is None and second.stats is not None
    assert second.stats.cached_tokens == first.stats.prompt_tokens  # the conversation so far came from the cache
