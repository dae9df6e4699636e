"""The thinking block widget on its own: open while streaming, collapsed with its count once the
answer starts, a click opens it; the prompt keeps the keyboard."""

from textual.app import App, ComposeResult
from textual.widgets import Static, TextArea

from squish.tui.widgets.thinking import TAIL_LINES, ThinkingBlock


class Host(App):
    def compose(self) -> ComposeResult:
        yield ThinkingBlock()
        yield TextArea(id="prompt")

    def on_mount(self) -> None:
        self.query_one("#prompt").focus()


def shown(block: ThinkingBlock, part: str) -> str:
    return str(block.query_one(part, Static).render())


async def test_the_block_streams_its_last_lines_then_collapses_with_its_count():
    app = Host()
    async with app.run_test() as pilot:
        block = app.query_one(ThinkingBlock)
        for i in range(20):
            block.append(f"step {i}\n", tokens=3)
        await pilot.pause()
        assert not block.collapsed and shown(block, ".title").startswith("▾ thinking… 60 tokens")
        body = shown(block, ".body")
        assert "step 19" in body and "step 0\n" not in body and len(body.splitlines()) == TAIL_LINES
        block.finish(tokens=61, seconds=2.5)
        await pilot.pause()
        assert block.collapsed and shown(block, ".title") == "▸ thought for 61 tokens · 2.5 s"
        assert not block.query_one(".body").display or block.query_one(".body").region.height == 0
        await pilot.click(ThinkingBlock)
        assert not block.collapsed and "step 0" in shown(block, ".body")  # opened: all of it
        await pilot.click(ThinkingBlock)
        assert block.collapsed
        assert app.focused is app.query_one("#prompt")  # clicking the block never takes the keyboard


async def test_a_block_from_the_history_starts_collapsed():
    class Saved(App):
        def compose(self) -> ComposeResult:
            yield ThinkingBlock("I reasoned.", tokens=4, seconds=0.8, done=True)

    app = Saved()
    async with app.run_test():
        block = app.query_one(ThinkingBlock)
        assert block.collapsed and shown(block, ".title") == "▸ thought for 4 tokens · 0.8 s"
