"""The first-run offer: download the best catalog model for this machine, or stay on the embedded one.

`needs_first_run()` says whether to show it. `FirstRunScreen` dismisses with the catalog id to pull
(push `PullScreen(id, make_default=True)` next), or None to continue with the embedded model. The
answer is saved in the config file; the offer returns only if a chosen pull never completed.
Nothing here touches the network: the sizes shown are the catalog's estimates.
"""

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from ...models import catalog, hardware, settings, store
from ...models.pull import human_size


def needs_first_run(home: Path | None = None) -> bool:
    choice = settings.first_run_choice(home)
    if choice is None:
        return True
    return choice.get("choice") == "pull" and settings.default_model(home) is None


class FirstRunScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    FirstRunScreen {
        align: center middle;
    }
    #first-run-dialog {
        width: 80;
        height: auto;
        max-height: 100%;
        overflow-y: auto;
        padding: 1 2;
        border: round $accent;
        background: $surface;
    }
    #first-run-dialog Label {
        width: 100%;
        margin-bottom: 1;
    }
    #first-run-title {
        text-style: bold;
        margin-bottom: 1;
    }
    #first-run-buttons {
        height: auto;
        margin-top: 1;
    }
    #first-run-buttons Button {
        margin-right: 2;
    }
    """
    BINDINGS = [("escape", "embedded", "Continue with the embedded model")]

    def __init__(self, home: Path | None = None, hw: hardware.Hardware | None = None) -> None:
        super().__init__()
        self.home = home
        self.hw = hw or hardware.detect(home)
        self.recommended: catalog.CatalogModel | None = hardware.recommend(self.hw)

    def compose(self) -> ComposeResult:
        hw = self.hw
        with Vertical(id="first-run-dialog"):
            yield Label("Welcome to squish", id="first-run-title")
            yield Label(
                f"This machine: {hw.backend}, {hw.total_ram_gb:.0f} GB RAM ({hw.available_ram_gb:.1f} GB free), "
                f"{hw.free_disk_gb:.0f} GB free disk.",
                id="first-run-machine",
            )
            model = self.recommended
            if model is not None:
                ram = model.ram()
                yield Label(
                    f"Recommended: {model.id} ({model.repo})\n"
                    f"download about {human_size(model.size_bytes)}, RAM {ram.describe()}",
                    id="first-run-offer",
                )
            else:
                yield Label("No catalog model fits this machine comfortably right now.", id="first-run-offer")
            yield Label(
                f"Or keep chatting with the embedded {store.EMBEDDED_NAME}: small, no download. "
                "Later: /model, or `squish pull NAME`.",
                id="first-run-embedded-note",
            )
            with Horizontal(id="first-run-buttons"):
                if model is not None:
                    yield Button(f"Download {model.id}", id="first-run-pull", variant="primary")
                yield Button(f"Continue with {store.EMBEDDED_NAME}", id="first-run-embedded")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "first-run-pull" and self.recommended is not None:
            settings.record_first_run("pull", self.recommended.id, self.home)
            self.dismiss(self.recommended.id)
        else:
            self.action_embedded()

    def action_embedded(self) -> None:
        settings.record_first_run("embedded", None, self.home)
        self.dismiss(None)
