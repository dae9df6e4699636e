"""The first-run offer: a bar above the chat, never in the way of the user's typing.

`needs_first_run()` says whether to show it. The bar names the best catalog model for this
machine (download size, RAM estimate) beside the embedded one, which answers in the meantime.
Its buttons cannot take the focus, so Enter in the prompt always sends the question: a download
starts only on a click of "Download" (or, from the keyboard, through /model). "Keep" and "✕"
hide it; every answer is saved in the config file, and the offer returns only if a chosen
pull never completed. Nothing here touches the network: the sizes are the catalog's estimates.
"""

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Container
from textual.message import Message
from textual.widgets import Button, Label

from ...models import catalog, hardware, settings, store
from ...models.pull import human_size


def needs_first_run(home: Path | None = None) -> bool:
    choice = settings.first_run_choice(home)
    if choice is None:
        return True
    return choice.get("choice") == "pull" and settings.default_model(home) is None


class OfferButton(Button, can_focus=False):
    """A button only the mouse presses: the keyboard stays with the prompt."""


class FirstRunOffer(Container):
    DEFAULT_CSS = """
    FirstRunOffer {
        layout: horizontal;
        height: auto;
        padding: 0 1;
        margin: 0 1;
        border: round $accent 60%;
        & > Label { width: 1fr; padding: 1 0 0 0; }
        & > OfferButton { min-width: 0; margin-left: 1; }
        & > #first-run-close { min-width: 5; }
    }
    """

    class Chosen(Message):
        """The user's answer (already saved): a catalog id to pull, or None to stay embedded."""

        def __init__(self, name: str | None) -> None:
            super().__init__()
            self.name = name

    def __init__(self, home: Path | None = None, hw: hardware.Hardware | None = None) -> None:
        super().__init__()
        self.home = home
        self.hw = hw or hardware.detect(home)
        self.recommended: catalog.CatalogModel | None = hardware.recommend(self.hw)

    def compose(self) -> ComposeResult:
        model = self.recommended
        if model is not None:
            text = (
                f"New here? {model.id} suits this machine: {human_size(model.size_bytes)} download, "
                f"about {model.ram().total_bytes / 1e9:.1f} GB RAM. The embedded {store.EMBEDDED_NAME} "
                "answers meanwhile; /model lists every model."
            )
        else:
            text = f"No catalog model fits this machine comfortably: chatting with the embedded {store.EMBEDDED_NAME}."
        yield Label(text, id="first-run-offer")
        if model is not None:
            yield OfferButton(f"Download {model.id}", id="first-run-pull", variant="primary")
            yield OfferButton(f"Keep {store.EMBEDDED_NAME}", id="first-run-embedded")
        yield OfferButton("✕", id="first-run-close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "first-run-pull" and self.recommended is not None:
            settings.record_first_run("pull", self.recommended.id, self.home)
            self.post_message(self.Chosen(self.recommended.id))
        else:
            settings.record_first_run("embedded", None, self.home)
            self.post_message(self.Chosen(None))
        self.display = False  # the screen that holds it removes it when it handles Chosen
