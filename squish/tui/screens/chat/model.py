"""The chat screen's model: loading, switching and pulling models, and memory readings while idle."""

from textual import work
from textual.worker import get_current_worker

from ....engine.events import Error, EventStream, Loaded, Memory, Status
from ....errors import SquishError
from ....models import store
from ...messages import MemoryReading, ModelFailed, ModelLoaded, ModelStatus, TurnFinished
from ...widgets.first_run import FirstRunOffer
from ..pull import PullScreen

MEMORY_POLL_S = 0.5


def until_done(stream: EventStream):
    """A stream's events, in a thread worker; stops early (cancelling the request) when the
    worker is cancelled (the app is closing), so quitting never waits for a long model import."""
    worker = get_current_worker()
    return stream.events(stop=lambda: worker.is_cancelled)


class ModelControl:
    """ChatScreen's part that loads models on the engine and shows them (mixin of ChatScreen).

    While generating, the Live events carry the memory readings; idle, `poll_memory` asks.
    """

    def load_model(self, name: str | None) -> None:
        self.model_loading = True
        self.model_info = None
        self.model_bar.show_loading(name, "starting the engine")
        self.stats_panel.set_state("loading model")
        self._load_worker(name)

    @work(thread=True, group="load", exclusive=True, exit_on_error=False)
    def _load_worker(self, name: str | None) -> None:
        worker = get_current_worker()  # cancelled when a newer load replaces this one: it then stays silent
        loaded = False
        try:
            stream = store.load(self.engine, name, self.home, self.hf_cache)
        except SquishError as exc:  # not there, or a broken directory: the current model stays
            self.post_message(ModelFailed(name, str(exc)))
            return
        for event in until_done(stream):
            if worker.is_cancelled:
                return
            if isinstance(event, Status):
                self.post_message(ModelStatus(event.text))
            elif isinstance(event, Loaded):
                loaded = True
                self.post_message(ModelLoaded(event.info))
            elif isinstance(event, Error):
                self.post_message(ModelFailed(name, event.message))
        if loaded:  # show at once what the switch freed or took, without waiting for the poller
            for event in until_done(self.engine.memory()):
                if isinstance(event, Memory) and not worker.is_cancelled:
                    self.post_message(MemoryReading(event))

    def switch_model(self, name: str) -> None:
        """Load a ready model in place of the current one (the engine frees the old one first)."""
        if self.model_info is not None and name in (self.model_info.name, self.model_name):
            self.notify(f"{self.model_info.name} is already loaded")
            return
        self.model_name = name
        self.load_model(name)

    def pull_model(self, name: str, make_default: bool = False) -> None:
        """Download a model on the pull screen, then switch to it; cancelled or failed, nothing changes."""
        screen = PullScreen(
            name, home=self.home, endpoint=self.endpoint, make_default=make_default, hf_cache=self.hf_cache
        )

        def pulled(ready: str | None) -> None:
            if ready is not None:
                self.switch_model(ready)
            elif screen.error is not None:
                self.notify(screen.error, title=f"{name} was not downloaded", severity="error")
            else:
                self.notify("the bytes so far are kept: pulling it again resumes", title=f"{name}: download stopped")

        self.app.push_screen(screen, pulled)

    def on_first_run_offer_chosen(self, message: FirstRunOffer.Chosen) -> None:
        """The first-run offer's answer (already saved in the config): pull the model, or stay."""
        self.query(FirstRunOffer).remove()
        if message.name is not None:
            self.pull_model(message.name, make_default=True)
        self.prompt.focus()

    def on_model_status(self, message: ModelStatus) -> None:
        self.model_bar.show_loading(self.model_name, message.text)

    def on_model_loaded(self, message: ModelLoaded) -> None:
        info = message.info
        self.model_loading = False
        self.model_info = info
        self.model_name = self.model_name or info.name
        self.model_bar.show_model(info.name, info.quantization, info.kernels)
        if self.pending is not None:  # a question asked before the model was ready
            request, self.pending = self.pending, None
            self.submit(request)
        elif not self.busy:
            self.stats_panel.set_state("ready")

    def on_model_failed(self, message: ModelFailed) -> None:
        self.model_loading = False
        self.model_info = None
        self.model_bar.show_failure(f"no model: {message.message}")
        self.stats_panel.set_state("no model")
        if self.pending is not None:
            self.pending = None
            self.post_message(TurnFinished("error", None, Error("no model is loaded", 2)))
        self.notify(f"{message.message}\n/model picks another model", title="model failed to load", severity="error")

    @work(thread=True, group="memory", exit_on_error=False)
    def poll_memory(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            if not self.busy and not self.model_loading:
                for event in until_done(self.engine.memory()):
                    if isinstance(event, Memory):
                        self.post_message(MemoryReading(event))
            worker.cancelled_event.wait(MEMORY_POLL_S)

    def on_memory_reading(self, message: MemoryReading) -> None:
        memory = message.memory
        self.last_memory = memory
        self.stats_panel.show_memory(memory.active_gb, memory.peak_gb, memory.rss_gb, memory.system_available_gb)
