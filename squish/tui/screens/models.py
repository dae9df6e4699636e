"""/model: pick the model to chat with."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ..models import ModelChoice


class ModelScreen(ModalScreen[ModelChoice | None]):
    DEFAULT_CSS = """
    ModelScreen {
        align: center middle;
        & > Vertical {
            width: 80%;
            max-width: 100;
            height: auto;
            max-height: 80%;
            border: thick $primary 60%;
            background: $surface;
            padding: 0 1;
        }
        & .title { text-style: bold; }
        & .hint { color: $text-muted; }
        & OptionList { height: auto; max-height: 20; border: none; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "back")]

    def __init__(self, choices: list[ModelChoice], current: str | None) -> None:
        super().__init__()
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Models on this machine", classes="title")
            options = []
            for choice in self.choices:
                mark = "● " if choice.name == self.current else "  "
                options.append(Option(f"{mark}{choice.name}\n    {choice.detail}", id=choice.name))
            yield OptionList(*options)
            yield Static("Enter loads the model · Esc goes back", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = [choice.name for choice in self.choices]
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
