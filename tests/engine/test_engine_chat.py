"""Integration tests of the engine's chat features on real models: KV caches saved to disk and
restored (and refused when corrupt, truncated, from another model, over the limit, or when the
disk refuses them), conversations fitted into a 512-token context, and <think> blocks."""

import json
import os

import pytest
from helpers import ANSWER, THOUGHT, build_tiny_model

from squish.engine import prompt_cache
from squish.engine.engine import ChatRequest, Engine
from squish.engine.events import CacheSaved, ContextTrimmed, Notice, Thinking
from squish.models import store

LIMIT = 10**9


def user(text):
    return [{"role": "user", "content": text}]


def conversation(turns, words=30):
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        messages += user(f"question {i}: " + "tell me more " * (words // 3))
        messages.append({"role": "assistant", "content": f"answer {i}: " + "more words " * (words // 2)})
    return messages + user("the last question")


def save(engine, session, path, limit=LIMIT):
    return engine.save_session(session, path, limit).collect()


@pytest.fixture(scope="module")
def other_engine(tmp_path_factory, home):
    """A second tiny model with other weights: a cache from tiny_engine is not its cache."""
    path = build_tiny_model(tmp_path_factory.mktemp("other") / "tiny-other", home, seed=7)
    eng = Engine()
    assert store.load(eng, str(path)).collect().error is None
    yield eng
    eng.shutdown()


# Saving and restoring a chat's KV cache.


def test_a_restored_cache_prefills_only_the_new_message_on_the_real_model(engine, tmp_path):
    history = user("What is the capital of France?")
    first = engine.generate(ChatRequest(history, session="persist", temperature=0, max_tokens=12)).collect()
    saved = save(engine, "persist", tmp_path / "chat.safetensors")
    saved_event = next(e for e in saved.events if isinstance(e, CacheSaved))
    assert saved_event.tokens == first.stats.prompt_tokens + first.stats.generation_tokens + 1
    assert saved_event.bytes == (tmp_path / "chat.safetensors").stat().st_size
    engine.drop_session("persist").collect()  # as after a restart: only the file has it
    history += [{"role": "assistant", "content": first.text}, *user("And of Italy?")]
    request = ChatRequest(history, session="persist", temperature=0, max_tokens=12, cache_file=tmp_path / "chat.safetensors")
    second = engine.generate(request).collect()
    assert second.error is None and not second.notices
    assert second.stats.cached_tokens == saved_event.tokens
    assert "Rome" in second.text


def test_a_restored_cache_gives_exactly_the_tokens_of_a_full_prefill(tiny_engine, tmp_path):
    history = conversation(2)
    tiny_engine.generate(ChatRequest(history, session="exact", temperature=0, max_tokens=6)).collect()
    save(tiny_engine, "exact", tmp_path / "c.safetensors")
    tiny_engine.drop_session("exact").collect()
    history += [{"role": "assistant", "content": "fine"}, *user("and then?")]
    restored = tiny_engine.generate(
        ChatRequest(history, session="exact", temperature=0, max_tokens=8, cache_file=tmp_path / "c.safetensors")
    ).collect()
    scratch = tiny_engine.generate(ChatRequest(history, temperature=0, max_tokens=8)).collect()
    assert restored.stats.cached_tokens > 0 and scratch.stats.cached_tokens == 0
    assert [e.token_id for e in restored.events if hasattr(e, "token_id")] == [
        e.token_id for e in scratch.events if hasattr(e, "token_id")
    ]


@pytest.fixture
def saved_cache(tiny_engine, tmp_path):
    history = conversation(1)
    first = tiny_engine.generate(ChatRequest(history, session="broken", temperature=0, max_tokens=4)).collect()
    path = tmp_path / "chat-1.safetensors"
    save(tiny_engine, "broken", path)
    tiny_engine.drop_session("broken").collect()
    return path, history + [{"role": "assistant", "content": first.text or "ok"}, *user("next")]


def resume(engine, path, history):
    return engine.generate(
        ChatRequest(history, session="broken", temperature=0, max_tokens=4, cache_file=path)
    ).collect()


def test_a_corrupt_cache_is_detected_by_its_checksum_and_the_history_is_prefilled(tiny_engine, saved_cache):
    path, history = saved_cache
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = resume(tiny_engine, path, history)
    assert result.error is None and result.stats.generation_tokens > 0
    assert result.notices == ["the saved KV cache is corrupt (checksum mismatch): the history is prefilled instead"]
    assert result.stats.cached_tokens == 0


def test_a_truncated_cache_is_detected_and_ignored(tiny_engine, saved_cache):
    path, history = saved_cache
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    result = resume(tiny_engine, path, history)
    assert result.error is None and result.stats.cached_tokens == 0
    assert len(result.notices) == 1 and "truncated" in result.notices[0]


def test_a_cache_without_its_checksum_file_is_not_trusted(tiny_engine, saved_cache):
    path, history = saved_cache
    path.with_suffix(".json").unlink()
    result = resume(tiny_engine, path, history)
    assert result.stats.cached_tokens == 0 and "incomplete" in result.notices[0]


def test_a_cache_made_by_another_model_is_discarded(other_engine, saved_cache):
    path, history = saved_cache
    result = resume(other_engine, path, history)
    assert result.error is None and result.stats.cached_tokens == 0
    assert "made by another model" in result.notices[0]


def test_a_cache_file_that_is_no_cache_at_all_is_ignored(tiny_engine, saved_cache):
    path, history = saved_cache
    path.write_bytes(b"not a safetensors file")
    path.with_suffix(".json").write_text(
        json.dumps({"bytes": path.stat().st_size, "sha256": prompt_cache.sha256_of(path)})
    )
    result = resume(tiny_engine, path, history)
    assert result.error is None and "cannot be read" in result.notices[0]


def test_a_disk_that_refuses_the_cache_is_an_error_and_the_engine_goes_on(tiny_engine, tmp_path):
    tiny_engine.generate(ChatRequest(user("hi"), session="nowhere", temperature=0, max_tokens=2)).collect()
    blocker = tmp_path / "kv"
    blocker.write_text("a file where the cache directory should be")
    result = save(tiny_engine, "nowhere", blocker / "chat-1.safetensors")
    assert result.error is not None and result.error.exit_code == 2
    assert result.error.message.startswith(f"cannot save the KV cache to {blocker / 'chat-1.safetensors'}")
    assert tiny_engine.generate(ChatRequest(user("hi"), temperature=0, max_tokens=2)).collect().error is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kv"]  # no temporary file left behind


def test_a_cache_over_the_limit_is_not_saved_and_its_stale_file_goes(tiny_engine, tmp_path):
    path = tmp_path / "chat-1.safetensors"
    tiny_engine.generate(ChatRequest(user("hi"), session="big", temperature=0, max_tokens=2)).collect()
    save(tiny_engine, "big", path)
    result = save(tiny_engine, "big", path, limit=100)
    assert result.finish_reason == "none" and "over the limit" in next(e.text for e in result.events if isinstance(e, Notice))
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_least_recently_used_caches_go_first_when_over_the_limit(tiny_engine, tmp_path):
    for i in range(3):
        tiny_engine.generate(ChatRequest(user(f"chat {i}"), session=f"lru-{i}", temperature=0, max_tokens=2)).collect()
        save(tiny_engine, f"lru-{i}", tmp_path / f"chat-{i}.safetensors")
        os.utime(tmp_path / f"chat-{i}.json", (1000 + i, 1000 + i))
    prompt_cache.touch(tmp_path / "chat-0.safetensors")  # chat 0 was just used: chat 1 is the oldest now
    limit = sum(prompt_cache.usage(tmp_path).values()) - 1
    tiny_engine.generate(ChatRequest(user("chat 3"), session="lru-3", temperature=0, max_tokens=2)).collect()
    save(tiny_engine, "lru-3", tmp_path / "chat-3.safetensors", limit=limit)
    # Four caches of the same size under a limit just below three: chat 1, then chat 2 go.
    assert sorted(prompt_cache.usage(tmp_path)) == ["chat-0", "chat-3"]
    assert sum(prompt_cache.usage(tmp_path).values()) <= limit


def test_saving_a_session_the_engine_does_not_hold_is_a_notice(tiny_engine, tmp_path):
    result = save(tiny_engine, "never-used", tmp_path / "x.safetensors")
    assert result.error is None and result.finish_reason == "none" and not (tmp_path / "x.safetensors").exists()


# A 512-token context that overflows.


def test_a_512_token_context_leaves_out_the_oldest_turns_and_keeps_the_cache_useful(tiny_engine, tmp_path):
    history = conversation(10)
    request = ChatRequest(history, session="ctx", temperature=0, max_tokens=8, context_size=512)
    first = tiny_engine.generate(request).collect()
    trimmed = next(e for e in first.events if isinstance(e, ContextTrimmed))
    assert first.error is None and trimmed.context_size == 512 and trimmed.left_out % 2 == 0
    assert first.stats.prompt_tokens <= 512 - 8 and first.stats.left_out_messages == trimmed.left_out
    assert first.stats.context_size == 512
    # The next turn keeps the same cut: its prompt starts as the last one did, so the cache serves it.
    history += [{"role": "assistant", "content": "ok"}, *user("one more")]
    second = tiny_engine.generate(ChatRequest(history, session="ctx", temperature=0, max_tokens=8, context_size=512)).collect()
    assert second.stats.left_out_messages == trimmed.left_out
    assert second.stats.cached_tokens > first.stats.prompt_tokens - 10
    # The cut travels with the saved cache, so a restarted app keeps it too.
    save(tiny_engine, "ctx", tmp_path / "ctx.safetensors")
    tiny_engine.drop_session("ctx").collect()
    history += [{"role": "assistant", "content": "ok"}, *user("and another")]
    third = tiny_engine.generate(
        ChatRequest(history, session="ctx", temperature=0, max_tokens=8, context_size=512, cache_file=tmp_path / "ctx.safetensors")
    ).collect()
    assert third.stats.left_out_messages == trimmed.left_out and third.stats.cached_tokens > first.stats.prompt_tokens


def test_the_system_prompt_and_the_last_turns_always_stay(tiny_engine, tiny_model):
    """The prompt the engine used is exactly the system prompt plus the newest whole turns."""
    from mlx_lm.utils import load_tokenizer

    history = conversation(10)
    result = tiny_engine.generate(ChatRequest(history, temperature=0, max_tokens=8, context_size=512)).collect()
    left_out = result.stats.left_out_messages
    kept = history[:1] + history[1 + left_out :]
    tokenizer = load_tokenizer(tiny_model)
    assert result.stats.prompt_tokens == len(tokenizer.apply_chat_template(kept, add_generation_prompt=True))
    assert kept[0]["role"] == "system" and kept[1]["role"] == "user" and kept[-1] == history[-1]


def test_a_last_message_longer_than_the_context_is_a_user_error(tiny_engine):
    result = tiny_engine.generate(ChatRequest(user("word " * 600), max_tokens=4, context_size=512)).collect()
    assert result.error.exit_code == 1 and "context window is 512" in result.error.message


def test_a_context_size_below_the_minimum_is_refused_before_the_model(tiny_engine):
    result = tiny_engine.generate(ChatRequest(user("hi"), context_size=8)).collect()
    assert result.error.exit_code == 1 and "at least 64" in result.error.message


# Thinking models: a scripted model and a template the tests build (tests/helpers.py).


def test_the_think_block_streams_apart_from_the_answer(thinking_engine):
    request = ChatRequest(user("Say hello"), temperature=0, max_tokens=32, template_args={"enable_thinking": True})
    result = thinking_engine.generate(request).collect()
    assert result.thinking == THOUGHT and result.text == ANSWER
    thinking = [e for e in result.events if isinstance(e, Thinking)]
    assert thinking and all("</think>" not in e.text for e in thinking)
    assert result.stats.thinking_tokens == 8  # "Greeting first.</think>" is 8 tokens of this tokenizer
    assert result.stats.generation_tokens == result.stats.thinking_tokens + 2
    assert result.stats.thinking_ms > 0


def test_thinking_off_renders_the_closed_block_and_the_model_answers_at_once(thinking_engine):
    result = thinking_engine.generate(
        ChatRequest(user("Say hello"), temperature=0, max_tokens=32, template_args={"enable_thinking": False})
    ).collect()
    assert result.thinking == "" and result.text == ANSWER and result.stats.thinking_tokens == 0


def test_the_model_info_says_which_templates_think(thinking_model, tiny_model):
    eng = Engine()
    try:
        scripted = store.load(eng, str(thinking_model)).collect().loaded
        plain = store.load(eng, str(tiny_model)).collect().loaded  # the embedded model's tokenizer and template
    finally:
        eng.shutdown()
    assert scripted.thinking and scripted.thinking_switch
    assert not plain.thinking and not plain.thinking_switch
    assert scripted.identity and plain.identity and scripted.identity != plain.identity
