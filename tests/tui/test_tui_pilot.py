"""The chat app driven with Textual's Pilot on the real engine and the embedded model.

Generations are few and short (the Linux CPU backend decodes ~9 tok/s); one engine
serves the whole module.
"""

from textual.widgets import Markdown

from helpers import submit_line

from squish.history import History
from squish.models.store import EMBEDDED_NAME
from squish.tui.app import SquishApp
from squish.tui.messages import TokensArrived
from squish.tui.widgets.message import ChatMessage
from squish.tui.widgets.prompt import PromptInput

SIZE = (110, 34)


async def ready(pilot, wait_until):
    screen = pilot.app.chat_screen
    await wait_until(pilot, lambda: screen.model_info is not None, what="the model to load")
    return screen


async def ask(pilot, wait_until, text: str, timeout: float = 120.0):
    """Send `text` and wait for its answer to be recorded (a fast answer can end within the key press)."""
    screen = pilot.app.chat_screen
    before = len(screen.turns)
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(screen.turns) > before and not screen.busy, timeout=timeout, what="the answer")


async def test_answer_streams_with_stats_and_survives_a_restart(engine, tmp_path, wait_until):
    path = tmp_path / "history.db"
    history = History(path)
    app = SquishApp(engine, history, max_tokens=24, temperature=0.0)
    batches: list[TokensArrived] = []  # every batch of tokens the pump posted (the hook sees a message
    # at each pump it reaches, so keep each one once)

    def hook(message) -> None:
        if isinstance(message, TokensArrived) and not any(message is seen for seen in batches):
            batches.append(message)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        screen = await ready(pilot, wait_until)
        assert screen.model_bar.model.startswith(EMBEDDED_NAME)
        await ask(pilot, wait_until, "What is the capital of France?")
        stats = screen.last_stats
        assert stats is not None and stats.finish_reason in ("stop", "length")
        assert "Paris" in screen.last_answer
        texts = [batch.text for batch in batches]
        assert len(texts) >= 2 and "".join(texts) == screen.last_answer, f"not streamed: {texts}"
        panel = screen.stats_panel
        assert panel.ttft_ms > 0 and panel.decode_tps > 0 and panel.tokens == stats.generation_tokens
        answer = list(screen.query(ChatMessage))[-1]
        assert answer.role == "assistant"
        assert answer.text == screen.last_answer
        assert len(answer.query(".body")) == 1 and not answer.query(Markdown)  # one full render at the end
        footer = str(answer.query_one(".footer").render())
        assert "TTFT" in footer and "tok/s" in footer and f"{stats.generation_tokens} tokens" in footer
        await pilot.pause(0.2)
        view = screen.conversation.region  # the view followed the answer: its end is on screen
        assert view.y < answer.region.bottom <= view.bottom
        first_prompt_tokens = stats.prompt_tokens
    history.close()

    history = History(path)
    stored = history.messages(history.last_chat().id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].finish_reason == stats.finish_reason and stored[1].stats["decode_tps"] > 0
    app = SquishApp(engine, history, max_tokens=8, temperature=0.0, continue_last=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        texts = [(m.role, m.text) for m in screen.query(ChatMessage)]
        assert texts == [("user", "What is the capital of France?"), ("assistant", stored[1].content)]
        assert "TTFT" in str(list(screen.query(ChatMessage))[-1].query_one(".footer").render())
        await ask(pilot, wait_until, "And of Italy?")
        # The follow-up's prompt holds the restored conversation, not just the new question.
        assert screen.last_stats.prompt_tokens > first_prompt_tokens + 3
        assert len(history.messages(screen.chat.id)) == 4
    history.close()


async def test_escape_stops_the_answer_and_keeps_it(engine, history, wait_until):
    app = SquishApp(engine, history, max_tokens=400, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        await pilot.press(*"Write a long story about a dragon.")
        # Pilot.press returns once the process's CPU goes idle, or after 2 s: the in-process engine
        # keeps it busy, and this answer (~190 tokens) can end inside a pressed Enter. So the
        # turn goes in as the message Enter posts (the first test presses Enter itself).
        screen.prompt.post_message(PromptInput.Submitted(screen.prompt.text))
        await wait_until(pilot, lambda: screen.answer is not None and len(screen.answer.text) > 5, what="some text")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy, timeout=10, what="the stop")
        stats = screen.last_stats
        assert stats.finish_reason == "cancelled"
        assert 0 < stats.generation_tokens < 400
        answer = list(screen.query(ChatMessage))[-1]
        assert answer.text and "stopped" in str(answer.query_one(".footer").render())
        stored = history.messages(screen.chat.id)[-1]
        assert stored.role == "assistant" and stored.finish_reason == "cancelled"
        assert stored.content == answer.text
        assert screen.context[-1] == {"role": "assistant", "content": answer.text}
        await pilot.press("escape")  # nothing to stop: no error, no change
        assert not screen.busy


async def test_slash_commands(engine, tmp_path, wait_until, notifications):
    from textual.command import CommandList

    from squish.tui.screens.chats import ChatsScreen
    from squish.tui.screens.info import InfoScreen
    from squish.tui.screens.models import ModelScreen

    history = History(tmp_path / "history.db")
    old = history.create_chat(EMBEDDED_NAME)
    history.add_message(old.id, "user", "Name a color.")
    history.add_message(
        old.id, "assistant", "Blue.", "stop", {"ttft_ms": 10.0, "decode_tps": 5.0, "generation_tokens": 2}
    )
    app = SquishApp(engine, history, continue_last=True)

    async def command(pilot, text: str) -> None:
        await submit_line(pilot, text)
        await pilot.pause(0.1)

    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        assert screen.chat.id == old.id

        await command(pilot, "/frobnicate")
        assert any("unknown command '/frobnicate'" in n for n in notifications(app))
        assert screen.prompt.text == "/frobnicate"  # kept, so it can be fixed
        screen.prompt.clear()
        await command(pilot, "/copy now")
        assert any("/copy takes no argument" in n for n in notifications(app))
        screen.prompt.clear()

        await command(pilot, "/help")
        assert isinstance(app.screen, InfoScreen) and "/export [path]" in app.screen.markdown
        await pilot.press("escape")
        await pilot.press("ctrl+p")  # the command palette offers every slash command
        await pilot.press(*"/stats")
        await wait_until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, timeout=10, what="hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, InfoScreen), timeout=10, what="the stats page")
        assert EMBEDDED_NAME in app.screen.markdown
        await pilot.press("escape")
        assert app.screen is screen

        await command(pilot, "/copy")
        assert app.clipboard == "Blue."

        target = tmp_path / "out" / "chat.md"
        target.parent.mkdir()
        await command(pilot, f"/export {target}")
        exported = target.read_text()
        assert "## You\n\nName a color." in exported and "## squish\n\nBlue." in exported
        await command(pilot, f"/export {target}")
        assert any("exists; not overwritten" in n for n in notifications(app))
        assert target.read_text() == exported
        await command(pilot, f"/export {tmp_path}/missing/dir/chat.md")
        assert any("cannot write" in n for n in notifications(app))

        await command(pilot, "/system Answer in French.")
        assert history.chat(old.id).system_prompt == "Answer in French."
        await command(pilot, "/system")
        assert "Answer in French." in notifications(app)

        await command(pilot, "/model")
        assert isinstance(app.screen, ModelScreen)
        assert app.screen.rows[0].name == EMBEDDED_NAME
        await pilot.press("enter")
        assert app.screen is screen
        assert screen.model_loading or screen.model_info is not None
        await wait_until(pilot, lambda: screen.model_info is not None, what="the reload")

        await command(pilot, "/chats")
        assert isinstance(app.screen, ChatsScreen)
        await pilot.press("r")
        await pilot.press("ctrl+a", "ctrl+k", *"Colours", "enter")  # home, delete to the end, type
        assert history.chat(old.id).title == "Colours"
        await pilot.press("escape")
        assert app.screen is screen

        await command(pilot, "/clear")
        assert history.messages(old.id) == [] and screen.context == [] and not screen.query(ChatMessage)
        await command(pilot, "/copy")
        assert any("no answer to copy" in n for n in notifications(app))
        await command(pilot, "/export")
        assert any("nothing to export" in n for n in notifications(app))

        second = history.create_chat(EMBEDDED_NAME)
        history.add_message(second.id, "user", "Hello")
        await command(pilot, "/chats")
        assert [chat.title for chat in app.screen.chats] == ["Hello"]  # the cleared chat has no messages
        await pilot.press("d", "d")
        assert history.chat(second.id) is None
        await pilot.press("escape")

        await command(pilot, "/new")
        assert screen.chat is None and not screen.query(ChatMessage)
        await command(pilot, "/quit")
    assert app.return_code in (0, None)
    history.close()


async def test_unknown_model_is_a_notification_and_the_app_keeps_running(engine, history, wait_until, notifications):
    app = SquishApp(engine, history, model="no-such-model:1b")
    async with app.run_test(size=SIZE) as pilot:
        screen = pilot.app.chat_screen
        await wait_until(pilot, lambda: not screen.model_loading and screen.stats_panel.state == "no model")
        assert any("unknown model 'no-such-model:1b'" in n for n in notifications(app))
        assert "no model" in screen.model_bar.failed
        await pilot.press(*"Hello?")
        await pilot.press("enter")
        assert any("No model is loaded" in n for n in notifications(app))
        assert screen.prompt.text == "Hello?" and history.chats() == []


async def test_continue_loads_the_chat_s_own_model_not_the_configured_default(engine, tiny_model, tmp_path, wait_until):
    history = History(tmp_path / "history.db")
    chat = history.create_chat(str(tiny_model))
    history.add_message(chat.id, "user", "Hi.")
    history.add_message(chat.id, "assistant", "Hello.", "stop")
    app = SquishApp(engine, history, continue_last=True, default_model=EMBEDDED_NAME)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, wait_until)
        assert screen.chat.id == chat.id and screen.model_info.path == str(tiny_model)
    history.close()


async def test_continue_with_no_saved_chat_opens_a_new_one_on_the_default(
    engine, tiny_model, history, wait_until, notifications
):
    app = SquishApp(engine, history, continue_last=True, default_model=str(tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        # Checked first: a notification expires after a few seconds, and a slow load can outlast it.
        await wait_until(pilot, lambda: "no saved chat to continue: this is a new one" in notifications(app))
        screen = await ready(pilot, wait_until)
        assert screen.chat is None and screen.model_info.path == str(tiny_model)
