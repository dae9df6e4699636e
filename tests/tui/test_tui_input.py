"""Slash-command parsing and the prompt widget, in a tiny host app (no engine)."""

import pytest
from textual.app import App, ComposeResult

from squish.tui import commands
from squish.tui.widgets.prompt import PromptInput


def test_parse_commands_and_their_errors():
    command, argument = commands.parse("/system  Be brief. ")
    assert command.name == "system" and argument == "Be brief."
    assert commands.parse("/EXPORT")[0].name == "export"
    with pytest.raises(commands.CommandError, match="unknown command '/nope'"):
        commands.parse("/nope")
    with pytest.raises(commands.CommandError, match="/new takes no argument"):
        commands.parse("/new chat")
    assert commands.is_command(" /help") and not commands.is_command("//etc/hosts is a file")
    assert not commands.is_command("what is /etc?")


def test_help_lists_every_command():
    for command in commands.COMMANDS.values():
        assert f"`{command.usage}`" in commands.HELP


class Host(App):
    def __init__(self, prompts):
        super().__init__()
        self.prompts = prompts
        self.sent = []

    def compose(self) -> ComposeResult:
        yield PromptInput(prompts=self.prompts)

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        self.sent.append(message.text)


async def test_enter_sends_and_ctrl_j_adds_a_line():
    app = Host([])
    async with app.run_test() as pilot:
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press("h", "i", "ctrl+j", "y", "o", "u")
        assert prompt.text == "hi\nyou"
        await pilot.press("enter")
        assert app.sent == ["hi\nyou"]
        prompt.clear()
        await pilot.press("space", "enter")  # blank prompts are not sent
        assert app.sent == ["hi\nyou"]


async def test_up_and_down_recall_earlier_prompts():
    app = Host(["first", "second\nline"])
    async with app.run_test() as pilot:
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press(*"draft")
        await pilot.press("up")
        assert prompt.text == "second\nline"
        await pilot.press("up")  # the cursor is on the last line: move up inside the prompt first
        assert prompt.text == "second\nline" and prompt.cursor_location[0] == 0
        await pilot.press("up")
        assert prompt.text == "first"
        await pilot.press("up")
        assert prompt.text == "first"  # nothing earlier
        await pilot.press("down")
        assert prompt.text == "second\nline"
        await pilot.press("down")
        assert prompt.text == "draft"
        prompt.remember("first")
        assert prompt.prompts == ["second\nline", "first"]
