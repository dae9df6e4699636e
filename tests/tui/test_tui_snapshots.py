"""Layout snapshots of the main screen and the chats screen, driven by the scripted engine."""

from squish.tui.app import SquishApp
from squish.tui.screens.chats import ChatsScreen

SIZE = (110, 34)


async def finish_one_turn(pilot) -> None:
    app = pilot.app
    screen = app.chat_screen
    while screen.model_info is None or screen.stats_panel.memory is None:
        await pilot.pause(0.05)
    await pilot.press(*"Write add in Python")
    await pilot.press("enter")
    while screen.busy or screen.last_stats is None:
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def test_main_screen_after_an_answer(snap_compare, scripted_engine, fixed_history):
    app = SquishApp(scripted_engine, fixed_history)
    assert snap_compare(app, terminal_size=SIZE, run_before=finish_one_turn)


def test_chats_screen(snap_compare, scripted_engine, fixed_history):
    first = fixed_history.create_chat("smollm2:135m")
    fixed_history.add_message(first.id, "user", "What is the capital of France?")
    fixed_history.add_message(first.id, "assistant", "The capital of France is Paris.")
    second = fixed_history.create_chat("qwen2.5:1.5b", "Answer in one word.")
    fixed_history.add_message(second.id, "user", "Name a primary color")
    fixed_history.rename(second.id, "Colors")

    async def open_chats(pilot) -> None:
        screen = pilot.app.chat_screen
        while screen.model_info is None:
            await pilot.pause(0.05)
        await pilot.press(*"/chats")
        await pilot.press("enter")
        while not isinstance(pilot.app.screen, ChatsScreen):
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    app = SquishApp(scripted_engine, fixed_history)
    assert snap_compare(app, terminal_size=SIZE, run_before=open_chats)
