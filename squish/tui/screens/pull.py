"""A model download screen: the hub's sizes, a progress bar with bytes, speed and ETA, and cancel.

Push `PullScreen(name)`; it dismisses with the model's name once the model is downloaded and
verified (ready for `Engine.load`), or with None when the user cancels or the pull fails (the
error stays on screen until closed, then in `error`). The download is plain Python networking,
so it runs in a thread worker; MLX is never touched here. A cancelled pull keeps its bytes:
pulling the same model again resumes.
"""

import logging
import threading
import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, ProgressBar

from ...errors import SquishError
from ...models import hardware, settings
from ...models import pull as hub

log = logging.getLogger(__name__)


class PullScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    PullScreen {
        align: center middle;
    }
    #pull-dialog {
        width: 76;
        height: auto;
        max-height: 100%;
        overflow-y: auto;
        padding: 1 2;
        border: round $accent;
        background: $surface;
    }
    #pull-dialog Label {
        width: 100%;
    }
    #pull-title {
        text-style: bold;
        margin-bottom: 1;
    }
    #pull-bar {
        margin: 1 0;
    }
    #pull-bar Bar {
        width: 60;
    }
    #pull-error {
        color: $error;
    }
    #pull-buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    """
    BINDINGS = [("escape", "cancel", "Cancel")]

    class Planned(Message):
        def __init__(self, plan: hub.Plan) -> None:
            self.plan = plan
            super().__init__()

    class Progressed(Message):
        def __init__(self, progress: hub.PullProgress) -> None:
            self.progress = progress
            super().__init__()

    class Finished(Message):
        def __init__(self, error: str | None, cancelled: bool = False) -> None:
            self.error, self.cancelled = error, cancelled
            super().__init__()

    def __init__(
        self,
        model: str,
        home: Path | None = None,
        endpoint: str | None = None,
        make_default: bool = False,
        hf_cache: Path | None = None,
    ) -> None:
        super().__init__()
        self.model, self.home, self.endpoint, self.make_default = model, home, endpoint, make_default
        self.hf_cache = hf_cache  # the Hugging Face cache pulled into; None: huggingface_hub's own
        self.stop = threading.Event()
        self.plan: hub.Plan | None = None
        self.done = False
        self.error: str | None = None  # why the pull failed, once it has

    def compose(self) -> ComposeResult:
        with Vertical(id="pull-dialog"):
            yield Label(f"Pulling {self.model}", id="pull-title")
            yield Label("asking the hub for the files and their sizes…", id="pull-plan")
            yield ProgressBar(total=None, show_eta=False, id="pull-bar")
            yield Label("", id="pull-bytes")
            yield Label("", id="pull-error")
            with Horizontal(id="pull-buttons"):
                yield Button("Cancel", id="pull-cancel", variant="error")

    def on_mount(self) -> None:
        self.pull()

    @work(thread=True, exclusive=True, group="pull")
    def pull(self) -> None:
        try:
            if hub.ready_dir(self.model, self.home, self.hf_cache) is not None:  # reuse, never download twice
                self.post_message(self.Finished(None))
                return
            plan = hub.fetch_plan(self.model, self.home, self.endpoint, hf_cache=self.hf_cache)
            self.post_message(self.Planned(plan))
            hub.check_disk(plan)  # refuse before a byte is written
            if self.stop.is_set():
                raise hub.Cancelled("cancelled before the download started")
            hub.download(
                plan, progress=lambda p: self.post_message(self.Progressed(p)), cancel=self.stop, endpoint=self.endpoint
            )
        except hub.Cancelled:
            self.post_message(self.Finished(None, cancelled=True))
        except SquishError as exc:
            self.post_message(self.Finished(str(exc)))
        except Exception as exc:  # a worker's exception would end the app: a failed pull must not
            log.exception("pull of %s failed", self.model)
            self.post_message(self.Finished(f"download of {self.model} failed: {hub.reason(exc)}"))
        else:
            self.post_message(self.Finished(None))

    def on_pull_screen_planned(self, message: Planned) -> None:
        plan = message.plan
        self.plan = plan
        self.model = plan.name
        hw = hardware.detect(self.home)
        fit = hardware.fit(plan.ram.total_bytes, hw)
        note = hardware.FIT_NOTES[fit]
        resumed = f", {hub.human_size(plan.present_bytes)} already here" if plan.present_bytes else ""
        repo = f"  ({plan.repo})" if plan.repo != plan.name else ""
        self.query_one("#pull-title", Label).update(f"Pulling {plan.name}{repo}")
        self.query_one("#pull-plan", Label).update(
            f"{hub.human_size(plan.total_bytes)} in {len(plan.files)} files{resumed}\n"
            f"RAM {plan.ram.describe()}: {note}"
            + ("\n3-bit is experimental: answers are noticeably worse" if plan.experimental else "")
        )
        self.query_one("#pull-bar", ProgressBar).update(total=plan.total_bytes, progress=plan.present_bytes)

    def on_pull_screen_progressed(self, message: Progressed) -> None:
        p = message.progress
        self.query_one("#pull-bar", ProgressBar).update(total=p.total_bytes, progress=p.done_bytes)
        if p.phase == "verify":
            text = f"verifying {hub.human_size(p.total_bytes)}…"
        else:
            eta = "–" if p.eta_s is None else time.strftime("%M:%S", time.gmtime(p.eta_s))
            text = (
                f"{hub.human_size(p.done_bytes)} / {hub.human_size(p.total_bytes)}"
                f" · {hub.human_size(p.speed_bps)}/s · ETA {eta}"
            )
        self.query_one("#pull-bytes", Label).update(text)

    def on_pull_screen_finished(self, message: Finished) -> None:
        self.done = True
        if self.plan is None and message.error is None and not message.cancelled:
            self.model = hub.identify(self.model)[0]
        if message.cancelled:
            self.dismiss(None)
        elif message.error is not None:
            self.error = message.error
            self.query_one("#pull-error", Label).update(message.error)
            button = self.query_one("#pull-cancel", Button)
            button.label, button.variant = "Close", "default"
        else:
            if self.make_default:
                settings.set_default_model(self.model, self.home)
            self.dismiss(self.model)

    def action_cancel(self) -> None:
        if self.done:
            self.dismiss(None)
            return
        self.stop.set()
        self.query_one("#pull-bytes", Label).update("stopping… (the bytes so far are kept for the next pull)")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "pull-cancel":
            event.stop()
            self.action_cancel()
