"""The multi-line prompt: Enter sends, Shift+Enter / Ctrl+J add a line, Up recalls earlier prompts."""

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 10;
        border: round $primary 40%;
        padding: 0 1;
        &:focus { border: round $primary; }
    }
    """

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, prompts: list[str] | None = None, **kwargs) -> None:
        super().__init__(soft_wrap=True, highlight_cursor_line=False, **kwargs)
        self.cursor_blink = False  # a blinking cursor redraws the screen twice a second, also mid-answer
        self.prompts = list(prompts or [])  # earlier prompts, oldest first
        self._recall: int | None = None  # index into prompts while recalling
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)

    def remember(self, text: str) -> None:
        if text in self.prompts:
            self.prompts.remove(text)
        self.prompts.append(text)
        self._recall = None

    def action_cursor_up(self, select: bool = False) -> None:
        if select or not self.cursor_at_first_line or not self.prompts:
            return super().action_cursor_up(select)
        if self._recall is None:
            self._draft = self.text
            self._recall = len(self.prompts)
        if self._recall > 0:
            self._recall -= 1
            self._show(self.prompts[self._recall])

    def action_cursor_down(self, select: bool = False) -> None:
        if select or self._recall is None or not self.cursor_at_last_line:
            return super().action_cursor_down(select)
        self._recall += 1
        if self._recall >= len(self.prompts):
            self._recall = None
            self._show(self._draft)
        else:
            self._show(self.prompts[self._recall])

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)
