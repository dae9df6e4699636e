"""/model: pick the model to chat with, from the local models and the catalog."""

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ...models.inventory import PickerRow


def row_prompt(row: PickerRow, current: str | None) -> Text:
    mark = "● " if row.name == current else "  "
    prompt = Text(f"{mark}{row.name}\n    {row.detail}")
    if row.fit == "no":
        prompt.stylize("dim")
    return prompt


class ModelScreen(ModalScreen[PickerRow | None]):
    """Dismisses with the chosen row: a ready one to load, or a catalog one to pull first."""

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
        & OptionList { height: auto; max-height: 24; border: none; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "back")]

    def __init__(self, rows: list[PickerRow], current: str | None) -> None:
        super().__init__()
        self.rows = rows
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Models: on this machine, then the catalog", classes="title")
            options: list[Option | None] = []
            for index, row in enumerate(self.rows):
                if not row.ready and options and self.rows[index - 1].ready:
                    options.append(None)  # a line between the local models and the catalog
                options.append(Option(row_prompt(row, self.current)))
            yield OptionList(*options)
            yield Static("Enter loads a local model, or downloads a catalog one first · Esc goes back", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = [row.name for row in self.rows]
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.rows[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
