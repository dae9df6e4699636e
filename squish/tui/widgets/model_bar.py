"""The top line: the model, its quantization and backend, or the loading state, and the chat title."""

from textual.widgets import Static

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class ModelBar(Static):
    DEFAULT_CSS = """
    ModelBar {
        dock: top;
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text;
        &.loading { color: $warning; }
        &.failed { color: $error; }
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.model = ""
        self.chat_title = ""
        self.mode = ""
        self.loading_text: str | None = None
        self.failed: str | None = None
        self._frame = 0
        self._spinner = None

    def on_mount(self) -> None:
        self._spinner = self.set_interval(0.1, self._spin, pause=True)

    def _spin(self) -> None:
        self._frame += 1
        self._redraw()

    def show_loading(self, name: str | None, status: str) -> None:
        self.loading_text, self.failed = f"{name}: {status}" if name else status, None
        if self._spinner is not None:
            self._spinner.resume()
        self._redraw()

    def show_model(self, name: str, quantization: str, kernels: str) -> None:
        self.model, self.loading_text, self.failed = f"{name} · {quantization} · {kernels}", None, None
        if self._spinner is not None:
            self._spinner.pause()
        self._redraw()

    def show_failure(self, text: str) -> None:
        self.loading_text, self.failed = None, text
        if self._spinner is not None:
            self._spinner.pause()
        self._redraw()

    def show_title(self, title: str) -> None:
        self.chat_title = title
        self._redraw()

    def show_mode(self, mode: str) -> None:
        self.mode = mode
        self._redraw()

    def _redraw(self) -> None:
        if self.loading_text:
            left = f"{SPINNER[self._frame % len(SPINNER)]} {self.loading_text}"
        elif self.failed:
            left = f"✗ {self.failed}"
        else:
            left = self.model or "no model"
        title = f"  │  {self.chat_title}" if self.chat_title else ""
        mode = f"  │  {self.mode}" if self.mode else ""
        self.update(f"squish  │  {left}{mode}{title}", layout=False)  # one docked line: its size never changes
        self.set_class(bool(self.loading_text), "loading")
        self.set_class(bool(self.failed), "failed")
