"""One message of the conversation.

An answer streams into a Textual `Markdown` widget through `MarkdownStream`. Textual
lays out every widget of the screen on each update, and its Markdown makes a widget
per block (several per list item), so a long answer would make each update slower.
The live widget therefore holds only the last few blocks: once it has more than
`LIVE_BLOCKS`, the finished text before them is frozen into one static Rich render
(one widget, redrawn only at each freeze), and the tail keeps streaming. When the
answer ends, the whole text is rendered once, in full, as one widget (code fences and
lists come out right across the seams).
"""

from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownBlock, MarkdownStream

ROLE_TITLES = {"user": "you", "assistant": "squish", "system": "system", "tool": "tool"}
LIVE_BLOCKS = 8
FENCES = ("```", "~~~")


def rendered(text: str) -> RichMarkdown:
    return RichMarkdown(text, code_theme="monokai", hyperlinks=False)


def freeze_point(text: str) -> int:
    """The end of the last blank line after which `text` can be cut into two documents that
    render as one: not inside a code fence, and not before a line indented enough (two
    spaces, or a tab) to continue a list item or start indented code."""
    point, offset, fenced, blank = 0, 0, False, False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if blank and not fenced and stripped and len(indent) < 2 and "\t" not in indent:
            point = offset
        if stripped.startswith(FENCES):
            fenced = not fenced
        blank = not stripped
        offset += len(line)
    return point


class ChatMessage(Vertical):
    DEFAULT_CSS = """
    ChatMessage {
        height: auto;
        margin: 0 0 1 0;
        padding: 0 1;
        & > .role { color: $text-muted; text-style: bold; }
        & > .body { margin: 0; padding: 0; height: auto; }
        & > Markdown { margin: 0; padding: 0; background: transparent; }
        & > .footer { color: $text-muted; height: auto; margin-top: 1; }
        & > .footer.empty { display: none; }
        & > .footer.stopped { color: $warning; }
        & > .footer.failed { color: $error; }
    }
    ChatMessage.user {
        border-left: outer $primary;
        background: $boost;
    }
    ChatMessage.assistant { border-left: outer $success 60%; }
    """

    def __init__(self, role: str, text: str = "", footer: str = "", footer_class: str = "") -> None:
        super().__init__(classes=role)
        self.role = role
        self.text = text
        self.tail = ""  # the text in the live Markdown widget
        self.freezes = 0
        self._footer_text = footer
        self._footer_class = footer_class
        self._live: Markdown | None = None
        self._frozen: Static | None = None
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Static(ROLE_TITLES.get(self.role, self.role), classes="role")
        if self.role != "assistant":
            yield Static(self.text, classes="body", markup=False)
        elif self.text:
            yield Static(rendered(self.text), classes="body")
        footer = Static(self._footer_text, classes=f"footer {self._footer_class}".strip(), markup=False)
        footer.set_class(not self._footer_text, "empty")
        yield footer

    async def append(self, text: str) -> None:
        """Add streamed text: only the trailing block is re-parsed, and the live widget stays small."""
        self.text += text
        self.tail += text
        if self._live is None:
            self._live = Markdown()
            await self.mount(self._live, before=self.query_one(".footer"))
            self._stream = Markdown.get_stream(self._live)
        await self._stream.write(text)
        if len(self._live.query_children(MarkdownBlock)) > LIVE_BLOCKS:
            await self._freeze()

    async def _freeze(self) -> None:
        point = freeze_point(self.tail)
        if point == 0:
            return
        await self._stream.stop()
        self.tail = self.tail[point:]
        frozen = self.text[: len(self.text) - len(self.tail)]
        if self._frozen is None:
            self._frozen = Static(classes="body frozen")
            await self.mount(self._frozen, before=self._live)
        self._frozen.update(rendered(frozen))
        await self._live.update(self.tail)
        self._stream = Markdown.get_stream(self._live)
        self.freezes += 1

    async def finish(self, footer: str, footer_class: str = "") -> None:
        """Stop streaming and render the whole answer once, as one widget."""
        if self._stream is not None:
            await self._stream.stop()
        self._stream = None
        with self.app.batch_update():
            await self.query(".body").remove()
            if self._live is not None:
                await self._live.remove()
                self._live = None
            self._frozen = None
            if self.text:
                await self.mount(Static(rendered(self.text), classes="body"), before=self.query_one(".footer"))
        self.tail = ""
        self.set_footer(footer, footer_class)

    def set_footer(self, footer: str, footer_class: str = "") -> None:
        widget = self.query_one(".footer", Static)
        widget.update(footer)
        widget.set_classes(f"footer {footer_class}".strip())
        widget.set_class(not footer, "empty")
