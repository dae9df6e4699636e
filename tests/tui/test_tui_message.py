"""The streaming message widget: the live Markdown tail stays small, the end is one full render."""

from textual.app import App, ComposeResult
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownBlock

from squish.tui.widgets.message import LIVE_BLOCKS, ChatMessage, freeze_point

ANSWER = (
    "Intro paragraph.\n\n"
    "1. one\n2. two\n\n"
    "```python\ndef f(x):\n\n    return x\n```\n\n"
    "- item\n\n  continued item text\n\n"
    "Closing words.\n\n"
)


def test_freeze_point_never_cuts_a_fence_or_a_continuation():
    text = "para\n\n```\ncode\n\nmore code\n```\n\n- item\n\n  continued\n\nlast"
    point = freeze_point(text)
    assert text[point:] == "last"
    assert freeze_point("```\nopen fence\n\nstill code\n") == 0
    assert freeze_point("a\n\n  indented\n") == 0
    assert freeze_point("a\n\n\tindented\n") == 0
    assert freeze_point("a\n\n one space is a new paragraph") == 3
    assert freeze_point("no blank line yet") == 0


class Host(App):
    def compose(self) -> ComposeResult:
        yield ChatMessage("assistant")


async def test_a_long_answer_streams_with_a_bounded_live_tail_and_ends_as_one_render():
    app = Host()
    async with app.run_test() as pilot:
        message = app.query_one(ChatMessage)
        words = (ANSWER * 8).split(" ")
        largest = 0
        for i in range(0, len(words), 4):
            await message.append(" ".join(words[i : i + 4]) + ("" if i + 4 >= len(words) else " "))
            await pilot.pause()
            largest = max(largest, len(message.query(MarkdownBlock)))
        assert message.freezes >= 3
        assert largest <= 3 * LIVE_BLOCKS  # blocks nest (list items); without freezing this reaches 72
        assert message.text == ANSWER * 8
        assert message.text.endswith(message.tail) and len(message.tail) < len(ANSWER) * 2
        await message.finish("TTFT 1 ms", "stopped")
        assert not message.query(Markdown) and len(message.query(".body")) == 1
        footer = message.query_one(".footer")
        assert footer.has_class("stopped") and "TTFT 1 ms" in str(footer.render())
