"""A modal page of Markdown: /help and /stats."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static


class InfoScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    InfoScreen {
        align: center middle;
        & > VerticalScroll {
            width: 80%;
            max-width: 90;
            height: auto;
            max-height: 85%;
            border: thick $primary 60%;
            background: $surface;
            padding: 0 1;
        }
        & .hint { color: $text-muted; }
    }
    """
    BINDINGS = [Binding("escape,q", "dismiss", "close")]

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.markdown)
            yield Static("Esc closes", classes="hint")

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(None)
