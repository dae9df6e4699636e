"""The chat app and the model's view of a chat: thinking blocks, /think, a 512-token context
overflowing, /compact, /ctx, and the KV cache saved on quit and on switching chats.

The thinking layout runs on tests/helpers.py's ScriptedEngine (a fixed stream of Thinking and
Token events); everything else on the real engine with tiny real models (random weights, or the
bigram thinking model of build_thinking_model)."""

import pytest
from helpers import ANSWER, ScriptedEngine, THOUGHT, submit_line
from textual.widgets import Static

from squish.engine.engine import Engine
from squish.engine.events import Progress, Stats, Thinking, Token
from squish.history import History
from squish.models import settings
from squish.tui.app import SquishApp
from squish.tui.widgets.message import ChatMessage
from squish.tui.widgets.thinking import ThinkingBlock

SIZE = (110, 40)
LONG = "Tell me about the rivers, hills and towns of the north, and the people who live there. " * 6


def thinking_reply():
    stats = Stats(120.0, 300.0, 42.0, 30, 0, 4, 0.25, 0.125, 0.5, "stop", 7, thinking_tokens=2, thinking_ms=500.0)
    return [
        Progress(0, 30),
        Progress(30, 30),
        Thinking("Let me", 0),
        Thinking(" think.", 1),
        Token("Hello", 2),
        Token(" there", 3),
        stats,
    ]


async def ready(pilot, wait_until):
    screen = pilot.app.chat_screen
    await wait_until(pilot, lambda: screen.model_info is not None, timeout=20, what="the model")
    return screen


async def ask(pilot, wait_until, text: str):
    screen = pilot.app.chat_screen
    before = len(screen.turns)
    await submit_line(pilot, text)
    await wait_until(pilot, lambda: len(screen.turns) > before and not screen.busy, what="the answer")
    return screen


async def command(pilot, text: str) -> None:
    await submit_line(pilot, text)
    await pilot.pause(0.1)


def notes(screen) -> list[str]:
    return [str(n.render()) for n in screen.query(".context-note").results(Static)]


# Thinking, on a scripted stream: the layout and what is saved.


async def test_the_think_block_sits_above_the_answer_collapsed_and_stays_out_of_the_context(history, wait_until):
    engine = ScriptedEngine(thinking_reply(), "Fine.")
    app = SquishApp(engine, history)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await ask(pilot, wait_until, "Hi")
        block = screen.query_one(ThinkingBlock)
        answer = list(screen.query(ChatMessage))[-1]
        children = list(screen.conversation.children)
        assert children.index(block) == children.index(answer) - 1
        assert block.collapsed and str(block.query_one(".title").render()) == "▸ thought for 2 tokens · 0.5 s"
        assert answer.text == "Hello there" and "think" not in answer.text
        stored = history.messages(screen.chat.id)[-1]
        assert (stored.content, stored.thinking) == ("Hello there", "Let me think.")
        await ask(pilot, wait_until, "And?")
        sent = engine.requests[-1].messages
        assert {"role": "assistant", "content": "Hello there"} in sent
        assert not any("Let me think" in m["content"] for m in sent)
    history.set_model(history.last_chat().id, None)  # "scripted:1m" is no model name the store knows
    app = SquishApp(ScriptedEngine(), history, continue_last=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await wait_until(pilot, lambda: screen.query(ThinkingBlock), what="the restored chat")
        block = screen.query_one(ThinkingBlock)
        assert block.collapsed and block.text == "Let me think." and "2 tokens · 0.5 s" in str(block.query_one(".title").render())


# Thinking on the real engine: the bigram model writes THOUGHT</think>ANSWER when thinking is on.


async def test_think_on_and_off_with_a_template_that_takes_enable_thinking(thinking_model, history, wait_until, notifications):
    engine = Engine()
    app = SquishApp(engine, history, model=str(thinking_model), temperature=0.0, max_tokens=32)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await ready(pilot, wait_until)
            await command(pilot, "/think on")
            assert "thinking on for thinker" in notifications(app)
            await ask(pilot, wait_until, "Say hello")
            assert screen.last_answer == ANSWER
            assert [b.text for b in screen.query(ThinkingBlock)] == [THOUGHT]
            assert screen.last_stats.thinking_tokens == 8
            await command(pilot, "/think off")
            await ask(pilot, wait_until, "Say hello")
            assert screen.last_answer == ANSWER and len(screen.query(ThinkingBlock)) == 1
    finally:
        engine.shutdown()


async def test_think_on_a_model_without_the_switch_is_a_notification(engine, tiny_model, history, wait_until, notifications):
    app = SquishApp(engine, history, model=str(tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, wait_until)
        await command(pilot, "/think on")
        assert "tiny-llama's chat template has no thinking switch" in notifications(app)
        assert app.chat_screen.thinking is None


# A 512-token context overflowing, and /compact.


def make_long_chat(history, model):
    chat = history.create_chat(str(model))
    for i in range(5):
        history.add_message(chat.id, "user", f"question {i}: {LONG}")
        history.add_message(chat.id, "assistant", f"answer {i}: {LONG}", "stop")
    return chat


@pytest.fixture
def long_chat(history, tiny_model):
    return make_long_chat(history, tiny_model)


async def test_a_512_token_context_leaves_out_old_turns_says_so_and_shows_the_context_used(
    engine, history, long_chat, wait_until
):
    app = SquishApp(engine, history, continue_last=True, context_size=512, max_tokens=8, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await ask(pilot, wait_until, "and now?")
        stats = screen.last_stats
        assert stats.left_out_messages > 0 and stats.prompt_tokens <= 512 - 8
        assert any("earlier messages are left out of the model's context (512 tokens)" in n for n in notes(screen))
        context = str(screen.stats_panel.query_one("#context").render())
        assert f"{stats.prompt_tokens + stats.generation_tokens}/512" in context and "MB" in context
        assert len(history.messages(long_chat.id)) == 12  # nothing of the saved history is deleted
        await ask(pilot, wait_until, "more?")  # the same cut: no second note, the cache serves it
        assert screen.last_stats.left_out_messages == stats.left_out_messages
        assert len([n for n in notes(screen) if "left out" in n]) == 1
        assert screen.last_stats.cached_tokens > stats.prompt_tokens - 10


async def test_compact_replaces_older_turns_with_a_summary_for_the_model_and_keeps_the_history(
    engine, history, thinking_model, wait_until, notifications
):
    long_chat = make_long_chat(history, thinking_model)  # its summary, like every answer: ANSWER
    app = SquishApp(engine, history, continue_last=True, max_tokens=12, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await wait_until(pilot, lambda: len(screen.context) == 10, what="the chat")
        await command(pilot, "/compact")
        await wait_until(pilot, lambda: "older turns summarized" in " ".join(notifications(app)), what="the summary")
        chat = history.chat(long_chat.id)
        last_question = [m for m in history.messages(long_chat.id) if m.role == "user"][-1]
        assert chat.summary == ANSWER and chat.context_from == last_question.id
        assert screen.context[0]["content"] == "Summarize our conversation so far."
        assert screen.context[1] == {"role": "assistant", "content": chat.summary}
        assert screen.context[2:] == [{"role": m.role, "content": m.content} for m in history.messages(chat.id)[-2:]]
        assert len(history.messages(chat.id)) == 10 and any("/compact" in n for n in notes(screen))
    app = SquishApp(engine, history, continue_last=True)  # reopened: the same context, the note in place
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await wait_until(pilot, lambda: screen.query(".context-note"), what="the restored chat")
        assert screen.context == history.context(long_chat.id) and len(screen.context) == 4


async def test_compact_with_one_turn_changes_nothing(engine, history, wait_until, notifications, tiny_model):
    app = SquishApp(engine, history, model=str(tiny_model), max_tokens=4)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, wait_until)
        await ask(pilot, wait_until, "hi")
        await command(pilot, "/compact")
        assert "nothing to compact yet: the chat has one turn" in notifications(app)
        assert app.chat_screen.chat.summary is None


async def test_ctx_sets_shows_and_refuses(engine, history, tiny_model, tmp_path, wait_until, notifications):
    app = SquishApp(engine, history, model=str(tiny_model), home=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, wait_until)
        await command(pilot, "/ctx 1024")
        assert app.chat_screen.context_size == 1024 and settings.context_size(tmp_path) == 1024
        await command(pilot, "/ctx")
        assert "context: 1024 tokens (the model's window: 8192)" in notifications(app)
        await command(pilot, "/ctx 10")
        assert "/ctx takes a number of tokens, at least 64" in notifications(app)
        assert app.chat_screen.context_size == 1024


# The KV cache saved on quit and on switching chats, restored when the chat is reopened.


async def test_the_cache_is_saved_on_quit_and_a_reopened_chat_prefills_only_the_new_message(
    tiny_model, history, wait_until
):
    first_engine = Engine()
    app = SquishApp(first_engine, history, model=str(tiny_model), max_tokens=6, temperature=0.0)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await ready(pilot, wait_until)
            await ask(pilot, wait_until, "hello there")
            chat_id, first = screen.chat.id, screen.last_stats
    finally:
        first_engine.shutdown()  # finishes the save queued when the app closed
    assert history.cache_path(chat_id).exists()
    second_engine = Engine()  # a new process, as far as the engine knows: nothing in memory
    app = SquishApp(second_engine, history, continue_last=True, max_tokens=6, temperature=0.0)
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await ready(pilot, wait_until)
            await wait_until(pilot, lambda: len(screen.context) == 2, what="the chat")
            await ask(pilot, wait_until, "and again")
            assert screen.last_stats.cached_tokens >= first.prompt_tokens
    finally:
        second_engine.shutdown()


async def test_switching_chats_saves_the_one_left_and_clear_deletes_it(engine, history, tiny_model, wait_until):
    app = SquishApp(engine, history, model=str(tiny_model), max_tokens=4)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await ask(pilot, wait_until, "first chat")
        first = screen.chat
        await command(pilot, "/new")
        await wait_until(pilot, lambda: history.cache_path(first.id).with_suffix(".json").exists(), what="the save")
        await command(pilot, "/chats")
        await pilot.press("enter")  # the first chat, the most recent with messages
        await wait_until(pilot, lambda: screen.chat is not None and screen.chat.id == first.id, what="the chat")
        await command(pilot, "/clear")
        assert not history.cache_path(first.id).exists()


# A first start: typing before the prompt has the focus, and before the model is there.


class SlowLoad(ScriptedEngine):
    """A scripted engine whose model load ends only when the test says so."""

    def load(self, ref):
        from squish.engine.events import EventStream, Status

        self.loading = EventStream()
        self.loading.put(Status("loading scripted:1m"))
        return self.loading

    def finish_load(self):
        from squish.engine.events import Done, Loaded

        self.loading.put(Loaded(self.info))
        self.loading.put(Done("ok"))


async def test_a_question_sent_before_the_model_is_ready_waits_for_it_then_is_answered(history, wait_until):
    engine = SlowLoad("Paris.")
    app = SquishApp(engine, history)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_until(pilot, lambda: hasattr(engine, "loading"), what="the load to start")
        await pilot.press(*"Capital of France?", "enter")
        await wait_until(pilot, lambda: screen.pending is not None, what="the waiting turn")
        assert engine.requests == [] and screen.busy and screen.stats_panel.state == "waiting for the model"
        assert [m.text for m in screen.query(ChatMessage)][0] == "Capital of France?"
        engine.finish_load()
        await wait_until(pilot, lambda: screen.turns and not screen.busy, what="the answer")
        assert screen.last_answer == "Paris." and len(engine.requests) == 1


async def test_keys_that_reach_the_screen_go_to_the_prompt_and_a_line_feed_sends(history, wait_until):
    engine = ScriptedEngine("Hello.")
    app = SquishApp(engine, history)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        for key in [*"hi there", "ctrl+j"]:  # an Enter typed before raw mode arrives as a line feed
            screen.set_focus(None)  # as while the app starts: each key is routed before the prompt has the focus
            await pilot.pause()
            await pilot.press(key)
        await wait_until(pilot, lambda: screen.turns and not screen.busy, what="the answer")
        assert engine.requests[0].messages[-1] == {"role": "user", "content": "hi there"}
        assert app.focused is screen.prompt and screen.prompt.text == ""
