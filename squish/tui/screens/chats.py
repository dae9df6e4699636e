"""/chats: saved chats to resume, rename and delete, with the size of each one's saved KV cache."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from ...engine import prompt_cache
from ...history import Chat, History, HistoryError
from ...models.pull import human_size


def age(seconds: float) -> str:
    seconds = max(0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


class ChatsScreen(Screen[int | None]):
    DEFAULT_CSS = """
    ChatsScreen {
        & > Vertical { padding: 1 2; }
        & .title { text-style: bold; margin-bottom: 1; }
        & OptionList { height: 1fr; border: tall $primary 40%; }
        & OptionList:focus { border: tall $primary; }
        & Input { display: none; }
        & Input.editing { display: block; }
        & .hint { color: $text-muted; height: auto; }
        & .hint.confirm { color: $warning; }
        & .empty { color: $text-muted; }
    }
    """
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("r", "rename", "rename"),
        Binding("d", "delete", "delete"),
    ]

    def __init__(self, history: History, current: int | None) -> None:
        super().__init__()
        self.history = history
        self.current = current
        self.chats: list[Chat] = []
        self._confirm_delete: int | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Chats", classes="title")
            yield OptionList()
            yield Input(placeholder="new title, Enter saves, Esc cancels")
            yield Static("", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_list()
        self.query_one(OptionList).focus()

    def refresh_list(self, highlight: int | None = None) -> None:
        self.chats = self.history.chats()
        options = self.query_one(OptionList)
        options.clear_options()
        now = self.history.clock()
        sizes = prompt_cache.usage(self.history.kv_dir)
        for chat in self.chats:
            mark = "● " if chat.id == self.current else "  "
            count = f"{chat.message_count} message" + ("" if chat.message_count == 1 else "s")
            detail = f"{count} · {chat.model or 'default model'} · {age(now - chat.updated)}"
            cache = sizes.get(self.history.cache_path(chat.id).stem)
            if cache:
                detail += f" · KV cache {human_size(cache)}"
            options.add_option(Option(f"{mark}{chat.title or '(untitled)'}\n    {detail}", id=str(chat.id)))
        if self.chats:
            ids = [chat.id for chat in self.chats]
            options.highlighted = ids.index(highlight) if highlight in ids else 0
        total = sum(sizes.values())
        kept = f" · saved KV caches {human_size(total)}" if total else ""
        self._hint(
            f"Enter resumes · r renames · d deletes · Esc goes back{kept}" if self.chats else "No saved chats yet."
        )

    def _hint(self, text: str, confirm: bool = False) -> None:
        hint = self.query_one(".hint", Static)
        hint.update(text)
        hint.set_class(confirm, "confirm")

    def _highlighted(self) -> Chat | None:
        index = self.query_one(OptionList).highlighted
        return self.chats[index] if index is not None and index < len(self.chats) else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.chats[event.option_index].id)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self._confirm_delete is not None:
            self._confirm_delete = None
            self.refresh_list(self.chats[event.option_index].id)

    def action_back(self) -> None:
        field = self.query_one(Input)
        if field.has_class("editing"):
            self._stop_editing()
        else:
            self.dismiss(None)

    def action_rename(self) -> None:
        chat = self._highlighted()
        if chat is None:
            return
        field = self.query_one(Input)
        field.value = chat.title
        field.add_class("editing")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        chat = self._highlighted()
        if chat is None:
            return
        try:
            self.history.rename(chat.id, event.value)
        except HistoryError as exc:
            self.notify(str(exc), severity="error")
            return
        self._stop_editing()
        self.refresh_list(chat.id)

    def _stop_editing(self) -> None:
        self.query_one(Input).remove_class("editing")
        self.query_one(OptionList).focus()

    def action_delete(self) -> None:
        chat = self._highlighted()
        if chat is None:
            return
        if self._confirm_delete != chat.id:
            self._confirm_delete = chat.id
            self._hint(f"Press d again to delete “{chat.title or '(untitled)'}” for good.", confirm=True)
            return
        self._confirm_delete = None
        self.history.delete_chat(chat.id)
        prompt_cache.remove(self.history.cache_path(chat.id))
        self.notify(f"deleted “{chat.title or '(untitled)'}”")
        self.refresh_list()

    def check_action(self, action: str, parameters) -> bool | None:
        # While the title field has focus, r and d are letters, not commands.
        if action in ("rename", "delete") and self.query_one(Input).has_focus:
            return False
        return True
