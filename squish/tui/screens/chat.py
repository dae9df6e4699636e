"""The chat screen: conversation, prompt, stats panel; sends turns to the engine and runs commands.

Everything here runs on the Textual event loop except the methods marked as thread
workers, which only read engine event streams and post messages (squish/tui/messages.py).
"""

import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import get_current_worker

from ...agent.approval import DENY
from ...agent.loop import AgentConfig
from ...engine.engine import ChatRequest
from ...engine.events import Error, EventStream, Loaded, Memory, Stats, Status
from ...engine.memory import process_rss_gb, system_available_gb
from ...errors import SquishError
from ...history import INCOMPLETE, Chat, History, HistoryError
from ...models import store
from ...models.hardware import Hardware
from ...models.inventory import PickerRow, picker_rows
from .. import commands
from ..agent_run import AgentAsk, AgentEvent, AgentFinished, AgentRun, AgentTools, tools_markdown
from ..messages import (
    LiveReading,
    MemoryReading,
    ModelFailed,
    ModelLoaded,
    ModelStatus,
    PrefillProgress,
    TokensArrived,
    TurnFinished,
)
from ..streaming import Pacing, pump
from ..transcript import export_markdown, footer_for, stats_markdown, stored_stats
from ..widgets.agent_cards import ApprovalPrompt
from ..widgets.message import ChatMessage
from ..widgets.model_bar import ModelBar
from ..widgets.prompt import PromptInput
from ..widgets.stats import StatsPanel
from .chats import ChatsScreen
from .info import InfoScreen
from .models import ModelScreen
from .pull import PullScreen

MEMORY_POLL_S = 0.5
LIVE_EVERY_S = 0.45
SAVE_PARTIAL_S = 2.0  # how often a streaming answer is written to the history
CHAT_PLACEHOLDER = "Ask anything · /help for commands"
AGENT_PLACEHOLDER = "Agent mode: give a task (tools work in the current folder) · /agent leaves"


def until_done(stream: EventStream):
    """A stream's events, in a thread worker; stops early (cancelling the request) when the
    worker is cancelled (the app is closing), so quitting never waits for a long model import."""
    worker = get_current_worker()
    return stream.events(stop=lambda: worker.is_cancelled)


class ChatScreen(Screen):
    DEFAULT_CSS = """
    ChatScreen {
        layout: vertical;
        & > Horizontal { height: 1fr; }
        & #conversation { height: 100%; width: 1fr; padding: 1 1 0 1; scrollbar-size-vertical: 1; }
        & PromptInput { dock: bottom; margin: 0 0 1 0; }
    }
    """
    BINDINGS = [
        Binding("escape", "stop", "stop answer"),
        Binding("ctrl+n", "command('new')", "new chat"),
        Binding("ctrl+l", "command('chats')", "chats"),
        Binding("f1", "command('help')", "help"),
    ]

    def __init__(
        self,
        engine,
        history: History,
        model: str | None = None,
        default_model: str | None = None,
        resume: int | None = None,
        system_prompt: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        home: Path | None = None,
        endpoint: str | None = None,
        hw: Hardware | None = None,
        workspace: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.history = history
        self.home = home  # where models are listed and pulled to: the engine's squish home
        self.endpoint = endpoint  # the hub for pulls; None is HF_ENDPOINT or huggingface.co
        self.hw = hw  # the machine for the picker's fit column; None detects it each time
        self.model_name = model  # what the user asked for (--model or /model)
        self.default_model = default_model  # without one and without a resumed chat's; None: embedded
        self.model_info = None  # set once loaded
        self.model_loading = False
        self.default_system = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.resume_id = resume
        self.chat: Chat | None = None  # created on the first message or /system
        self.system_prompt = system_prompt
        self.context: list[dict] = []  # the conversation as the engine sees it, without the system prompt
        self.stream = None
        self.answer: ChatMessage | None = None
        self.answer_id: int | None = None
        self.answer_saved_at = 0.0
        self.turn_tokens = 0
        self.last_stats: Stats | None = None
        self.last_answer = ""
        self.turns: list[Stats] = []
        self.last_memory: Memory | None = None
        self.pacing = Pacing()
        self.live_shown_at = 0.0
        self.agent_tools = AgentTools(workspace)  # the workspace is the current directory unless given
        self.agent_mode = False
        self.agent_run: AgentRun | None = None

    def compose(self) -> ComposeResult:
        yield ModelBar()
        with Horizontal():
            yield VerticalScroll(id="conversation")
            yield StatsPanel()
        yield PromptInput(prompts=self.history.recent_prompts(), placeholder=CHAT_PLACEHOLDER)
        yield Footer()

    def on_mount(self) -> None:
        self.conversation.anchor()
        if self.resume_id is not None:
            self.resume(self.resume_id)
            if self.model_name is None and self.chat is not None:
                self.model_name = self.chat.model  # --continue keeps the chat's own model
        if self.model_name is None:
            self.model_name = self.default_model
        self.prompt.focus()
        # Start the model only once the screen is painted: loading imports mlx-lm on the
        # engine thread, and that import would otherwise hold up the first frame.
        self.call_after_refresh(self.start_engine)

    def start_engine(self) -> None:
        self.load_model(self.model_name)
        self.poll_memory()

    @property
    def conversation(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def stats_panel(self) -> StatsPanel:
        return self.query_one(StatsPanel)

    @property
    def model_bar(self) -> ModelBar:
        return self.query_one(ModelBar)

    @property
    def busy(self) -> bool:
        return self.stream is not None or self.agent_run is not None

    # The model.

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
            stream = store.load(self.engine, name, self.home)
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
        screen = PullScreen(name, home=self.home, endpoint=self.endpoint, make_default=make_default)

        def pulled(ready: str | None) -> None:
            if ready is not None:
                self.switch_model(ready)
            elif screen.error is not None:
                self.notify(screen.error, title=f"{name} was not downloaded", severity="error")
            else:
                self.notify("the bytes so far are kept: pulling it again resumes", title=f"{name}: download stopped")

        self.app.push_screen(screen, pulled)

    def on_model_status(self, message: ModelStatus) -> None:
        self.model_bar.show_loading(self.model_name, message.text)

    def on_model_loaded(self, message: ModelLoaded) -> None:
        info = message.info
        self.model_loading = False
        self.model_info = info
        self.model_name = self.model_name or info.name
        self.model_bar.show_model(info.name, info.quantization, info.kernels)
        if not self.busy:
            self.stats_panel.set_state("ready")

    def on_model_failed(self, message: ModelFailed) -> None:
        self.model_loading = False
        self.model_info = None
        self.model_bar.show_failure(f"no model: {message.message}")
        self.stats_panel.set_state("no model")
        self.notify(f"{message.message}\n/model picks another model", title="model failed to load", severity="error")

    # Memory readings while idle (while generating, the Live events carry them).

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

    # Sending a turn.

    @on(PromptInput.Submitted)
    async def on_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text
        if commands.is_command(text):
            await self.run_command(text)
            return
        if text.lstrip().startswith("//"):
            text = text.replace("/", "", 1)
        if self.busy:
            self.notify("Still answering: Esc stops the answer.", severity="warning")
            return
        if self.model_info is None and not self.model_loading:
            self.notify("No model is loaded: /model picks one.", severity="error")
            return
        self.prompt.clear()
        self.prompt.remember(event.text)
        if self.agent_mode:
            await self.send_task(text)
        else:
            await self.send(text)

    async def send(self, text: str) -> None:
        chat = self.ensure_chat()
        self.history.add_message(chat.id, "user", text)
        self.context.append({"role": "user", "content": text})
        self.model_bar.show_title(self.history.chat(chat.id).title)
        self.answer = ChatMessage("assistant")
        await self.conversation.mount_all([ChatMessage("user", text), self.answer])
        self.conversation.scroll_end(animate=False)
        self.answer_id = self.history.add_message(chat.id, "assistant", "", finish_reason=INCOMPLETE)
        self.answer_saved_at = time.monotonic()
        self.turn_tokens = 0
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + self.context
        request = ChatRequest(
            list(messages),
            session=f"chat-{chat.id}",
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        self.stream = self.engine.generate(request)
        self.stats_panel.show_turn(None, None, 0)
        self.stats_panel.set_state("waiting for the model" if self.model_loading else "prefilling")
        self.pacing.start()
        self._pump_worker(self.stream)

    @work(thread=True, group="generate", exit_on_error=False)
    def _pump_worker(self, stream) -> None:
        worker = get_current_worker()
        pump(stream, self.post_message, lambda: worker.is_cancelled, self.pacing)

    async def on_tokens_arrived(self, message: TokensArrived) -> None:
        if self.answer is None:
            return
        self.pacing.observe()
        self.turn_tokens += message.tokens
        await self.answer.append(message.text)
        now = time.monotonic()
        if now - self.answer_saved_at >= SAVE_PARTIAL_S:
            self.answer_saved_at = now
            self.history.update_message(self.answer_id, self.answer.text)

    def on_prefill_progress(self, message: PrefillProgress) -> None:
        if message.processed < message.total:
            self.stats_panel.set_state(f"prefilling {message.processed}/{message.total} tokens")
        else:
            self.stats_panel.set_state("generating")

    def on_live_reading(self, message: LiveReading) -> None:
        now = time.monotonic()
        if now - self.live_shown_at < LIVE_EVERY_S:
            return  # the engine reports 4 times a second; twice is enough to read, and costs half
        self.live_shown_at = now
        live = message.live
        self.stats_panel.show_turn(live.ttft_ms, live.decode_tps, live.generation_tokens)
        # RSS and available memory are psutil readings, safe on this thread; MLX's come from the engine.
        self.stats_panel.show_memory(
            live.active_memory_gb, live.peak_memory_gb, process_rss_gb(), system_available_gb()
        )

    async def on_turn_finished(self, message: TurnFinished) -> None:
        answer, answer_id = self.answer, self.answer_id
        if answer is None:
            return
        stats, finish = message.stats, message.finish_reason
        stored = stored_stats(stats, self.model_name)
        footer, css = footer_for(stored, finish)
        if message.error is not None:
            footer = f"{footer} · {message.error.message}" if footer else f"error: {message.error.message}"
            self.notify(message.error.message, title="generation failed", severity="error")
        await answer.finish(footer, css)
        if answer.text:
            self.history.update_message(answer_id, answer.text, finish, stored)
            self.context.append({"role": "assistant", "content": answer.text})
            self.last_answer = answer.text
        else:
            self.history.delete_message(answer_id)
        if stats is not None:
            self.last_stats = stats
            self.turns.append(stats)
            self.stats_panel.show_turn(stats.ttft_ms, stats.decode_tps, stats.generation_tokens, stats.prefill_tps)
            if stats.generation_tokens > 1:
                self.stats_panel.add_turn_rate(stats.decode_tps)
            self.stats_panel.show_memory(stats.active_memory_gb, stats.peak_memory_gb, stats.rss_gb)
        if self.chat is not None and self.model_name:
            self.history.set_model(self.chat.id, self.model_name)
        self.stats_panel.set_state(
            "loading model" if self.model_loading else "ready" if self.model_info else "no model"
        )
        self.stream = self.answer = self.answer_id = None  # last: `busy` holds until the turn is recorded

    def action_stop(self) -> None:
        if self.agent_run is not None and not self.agent_run.cancelled:
            self.agent_run.cancel()
            self.stats_panel.set_state("stopping the agent")
        elif self.stream is not None and not self.stream.cancelled:
            self.stream.cancel()
            self.stats_panel.set_state("stopping")

    # Agent mode (squish/tui/agent_run.py): the loop runs in a thread worker and posts its events.

    async def send_task(self, task: str) -> None:
        chat = self.ensure_chat()
        self.history.add_message(chat.id, "user", task)
        self.model_bar.show_title(self.history.chat(chat.id).title)
        config = AgentConfig(temperature=self.temperature, answer_tokens=self.max_tokens)
        self.agent_run = AgentRun(self, self.engine, self.agent_tools, self.model_info, config)
        await self.conversation.mount_all([ChatMessage("user", task), self.agent_run.log])
        self.conversation.scroll_end(animate=False)
        self.stats_panel.set_state("agent working")
        self.agent_run.start(task, list(self.context))
        self.context.append({"role": "user", "content": task})

    def on_agent_event(self, message: AgentEvent) -> None:
        message.log.add_event(message.event)
        replied = getattr(message.event, "decode_tps", None)
        if replied:
            self.stats_panel.show_turn(None, replied, None)
        self.conversation.scroll_end(animate=False)

    def on_agent_ask(self, message: AgentAsk) -> None:
        if self.agent_run is None or self.agent_run.cancelled:
            message.pending.resolve(DENY)  # Esc came before the question reached the screen
            return
        message.log.ask(message.pending)
        self.conversation.scroll_end(animate=False)

    def on_approval_prompt_decided(self, _message: ApprovalPrompt.Decided) -> None:
        self.prompt.focus()

    async def on_agent_finished(self, message: AgentFinished) -> None:
        result = message.result
        if message.error:
            self.notify(message.error, title="agent failed", severity="error")
        elif result.text:
            steps = len(result.transcript.steps)
            await self.conversation.mount(ChatMessage("assistant", result.text, f"agent · {steps} step(s)"))
            if self.chat is not None:
                self.history.add_message(self.chat.id, "assistant", result.text, "stop")
            self.context.append({"role": "assistant", "content": result.text})
            self.last_answer = result.text
        elif result.reason == "cancelled":
            self.notify("agent stopped", severity="warning")
        else:
            self.notify(result.message, title=f"agent stopped: {result.reason}", severity="warning")
        self.conversation.scroll_end(animate=False)
        self.stats_panel.set_state("ready" if self.model_info else "no model")
        self.agent_run = None  # last: `busy` holds until the run is recorded
        self.prompt.focus()

    # Chats.

    def ensure_chat(self) -> Chat:
        if self.chat is None:
            self.chat = self.history.create_chat(self.model_name, self.system_prompt)
        return self.chat

    async def show_chat(self, chat: Chat | None) -> None:
        await self.conversation.remove_children()
        self.chat = chat
        self.context = []
        self.system_prompt = chat.system_prompt if chat else self.default_system
        self.last_answer = ""
        self.last_stats = None
        self.turns = []
        widgets = []
        if chat is not None:
            for message in self.history.messages(chat.id):
                footer, css = (
                    footer_for(message.stats, message.finish_reason) if message.role == "assistant" else ("", "")
                )
                widgets.append(ChatMessage(message.role, message.content, footer, css))
                if message.content:
                    self.context.append({"role": message.role, "content": message.content})
                    if message.role == "assistant":
                        self.last_answer = message.content
        await self.conversation.mount_all(widgets)
        self.conversation.scroll_end(animate=False)
        self.model_bar.show_title(chat.title if chat else "")
        self.stats_panel.show_turn(None, None, None)

    def resume(self, chat_id: int) -> None:
        chat = self.history.chat(chat_id)
        if chat is None:
            self.notify(f"chat {chat_id} no longer exists", severity="error")
            return
        self.chat = chat
        self.run_worker(self.show_chat(chat), group="show", exclusive=True)

    # Commands.

    def refuse_while_busy(self, name: str) -> bool:
        if self.busy:
            self.notify(f"/{name} waits for the answer: Esc stops it.", severity="warning")
        return self.busy

    async def action_command(self, name: str) -> None:
        await self.run_command(f"/{name}")

    async def run_command(self, text: str) -> None:
        try:
            command, argument = commands.parse(text)
        except commands.CommandError as exc:
            self.notify(str(exc), severity="error")
            return
        self.prompt.clear()
        try:
            await getattr(self, f"command_{command.name}")(argument)
        except HistoryError as exc:
            self.notify(str(exc), severity="error")

    async def command_help(self, _argument: str) -> None:
        self.app.push_screen(InfoScreen(commands.HELP))

    async def command_new(self, _argument: str) -> None:
        if not self.refuse_while_busy("new"):
            await self.show_chat(None)
            self.notify("new chat")

    async def command_chats(self, _argument: str) -> None:
        if self.refuse_while_busy("chats"):
            return

        async def chosen(chat_id: int | None) -> None:
            if self.chat is not None and self.history.chat(self.chat.id) is None:
                await self.show_chat(None)  # the current chat was deleted
            if chat_id is not None:
                await self.show_chat(self.history.chat(chat_id))
            elif self.chat is not None:
                self.model_bar.show_title(self.history.chat(self.chat.id).title)

        current = self.chat.id if self.chat else None
        self.app.push_screen(ChatsScreen(self.history, current), chosen)

    async def command_model(self, _argument: str) -> None:
        if self.refuse_while_busy("model"):
            return

        def chosen(row: PickerRow | None) -> None:
            if row is None:
                return
            if row.ready:
                self.switch_model(row.target)
            else:
                self.pull_model(row.name)

        current = self.model_info.name if self.model_info else self.model_name
        self.app.push_screen(ModelScreen(picker_rows(self.home, self.hw), current), chosen)

    async def command_system(self, argument: str) -> None:
        if not argument:
            shown = self.system_prompt or "(none: the model's default)"
            self.notify(shown, title="system prompt")
            return
        chat = self.ensure_chat()
        self.history.set_system_prompt(chat.id, argument)
        self.system_prompt = argument
        self.notify("system prompt set for this chat")

    async def command_clear(self, _argument: str) -> None:
        if self.refuse_while_busy("clear"):
            return
        if self.chat is not None:
            self.history.clear_messages(self.chat.id)
            self.engine.drop_session(f"chat-{self.chat.id}")
        await self.conversation.remove_children()
        self.context = []
        self.last_answer = ""
        self.notify("cleared this chat's messages")

    async def command_export(self, argument: str) -> None:
        messages = self.history.messages(self.chat.id) if self.chat else []
        if not messages:
            self.notify("nothing to export yet", severity="warning")
            return
        path = Path(argument or f"squish-chat-{self.chat.id}.md").expanduser()
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(export_markdown(self.history.chat(self.chat.id), messages))
        except FileExistsError:
            self.notify(f"{path} exists; not overwritten", title="export failed", severity="error")
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", title="export failed", severity="error")
        else:
            self.notify(f"saved {path.resolve()}")

    async def command_copy(self, _argument: str) -> None:
        if not self.last_answer:
            self.notify("no answer to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(self.last_answer)
        self.notify(f"copied the last answer ({len(self.last_answer)} characters)")

    async def command_stats(self, _argument: str) -> None:
        self.app.push_screen(InfoScreen(stats_markdown(self.model_info, self.last_stats, self.turns, self.last_memory)))

    async def command_agent(self, _argument: str) -> None:
        if self.refuse_while_busy("agent"):
            return
        self.agent_mode = not self.agent_mode
        self.prompt.placeholder = AGENT_PLACEHOLDER if self.agent_mode else CHAT_PLACEHOLDER
        self.model_bar.show_mode("agent" if self.agent_mode else "")
        if self.agent_mode:
            self.notify(f"agent mode: tools work in {self.agent_tools.workspace.root} (/tools lists them)")
        else:
            self.notify("chat mode")

    async def command_tools(self, _argument: str) -> None:
        self.app.push_screen(InfoScreen(tools_markdown(self.agent_tools.registry, self.agent_tools.workspace.root)))

    async def command_quit(self, _argument: str) -> None:
        self.app.exit()
