"""A thinking model's `<think>` block, shown apart from the answer.

Dimmed and never part of the answer's Markdown. While the model thinks the block is open and
shows the latest lines (the whole text would be re-laid out on every batch); once the answer
starts it collapses to one line with its token count and time. A click opens or closes it (the
whole text then). The text comes from the engine's `Thinking` events (squish/engine/thinking.py).
"""

import time

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.events import Click
from textual.widgets import Static

TAIL_LINES = 6


def summary(tokens: int, seconds: float, done: bool) -> str:
    counted = f"{tokens} token{'s' if tokens != 1 else ''} · {seconds:.1f} s"
    return f"▸ thought for {counted}" if done else f"▾ thinking… {counted}"


class ThinkingBlock(Vertical):
    DEFAULT_CSS = """
    ThinkingBlock {
        height: auto;
        margin: 0 0 1 0;
        padding: 0 1;
        border-left: outer $secondary 40%;
        color: $text-muted;
        & > .title { text-style: italic; height: 1; }
        & > .body { height: auto; max-height: 40; overflow-y: auto; }
        &.collapsed > .body { display: none; }
    }
    """

    def __init__(self, text: str = "", tokens: int = 0, seconds: float = 0.0, done: bool = False) -> None:
        """A block being streamed (the defaults), or a finished one from the history (`done`)."""
        super().__init__(classes="collapsed" if done else "")
        self.text = text
        self.tokens = tokens
        self.seconds = seconds
        self.done = done
        self.started = time.monotonic()

    def compose(self) -> ComposeResult:
        yield Static(summary(self.tokens, self.seconds, self.done), classes="title", markup=False)
        yield Static(self.text if self.done else self._tail(), classes="body", markup=False)

    @property
    def collapsed(self) -> bool:
        return self.has_class("collapsed")

    def _tail(self) -> str:
        return "\n".join(self.text.strip("\n").splitlines()[-TAIL_LINES:])

    def append(self, text: str, tokens: int) -> None:
        self.text += text
        self.tokens += tokens
        self.seconds = time.monotonic() - self.started
        self.query_one(".title", Static).update(summary(self.tokens, self.seconds, False))
        self.query_one(".body", Static).update(self._tail())

    def finish(self, tokens: int | None = None, seconds: float | None = None) -> None:
        """The answer started (or the turn ended): collapse, with the engine's count when given."""
        self.done = True
        if tokens:
            self.tokens = tokens
        if seconds is not None and seconds > 0:
            self.seconds = seconds
        self.query_one(".title", Static).update(summary(self.tokens, self.seconds, True))
        self.query_one(".body", Static).update(self.text.strip("\n"))
        self.add_class("collapsed")

    def on_click(self, event: Click) -> None:
        event.stop()
        if self.done:
            self.toggle_class("collapsed")
            title = summary(self.tokens, self.seconds, True)
            self.query_one(".title", Static).update(title if self.collapsed else title.replace("▸", "▾", 1))
