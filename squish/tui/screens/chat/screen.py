"""The chat screen itself: conversation, prompt and stats panel; sends turns to the engine.

With `offer_first_run`, the first-run offer (widgets/first_run.py) sits above the conversation:
the prompt has the keyboard from the first frame, and the offer never takes it."""

import time
from pathlib import Path

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import get_current_worker

from ....engine.engine import ChatRequest
from ....engine.events import Memory, Stats
from ....engine.memory import process_rss_gb, system_available_gb
from ....history import INCOMPLETE, Chat, History
from ....models.hardware import Hardware
from ... import commands
from ...agent_run import AgentRun, AgentTools
from ...messages import LiveReading, PrefillProgress, TokensArrived, TurnFinished
from ...streaming import Pacing, pump
from ...transcript import footer_for, stored_stats
from ...widgets.first_run import FirstRunOffer
from ...widgets.message import ChatMessage
from ...widgets.model_bar import ModelBar
from ...widgets.prompt import PromptInput
from ...widgets.stats import StatsPanel
from ...widgets.thinking import ThinkingBlock
from .agent import AgentMode
from .context import ChatContext, compact_note
from .model import ModelControl
from .slash import CHAT_PLACEHOLDER, SlashCommands

LIVE_EVERY_S = 0.45
SAVE_PARTIAL_S = 2.0  # how often a streaming answer is written to the history


class ChatScreen(ModelControl, AgentMode, SlashCommands, ChatContext, Screen):
    DEFAULT_CSS = """
    ChatScreen {
        layout: vertical;
        & > Horizontal { height: 1fr; }
        & #conversation { height: 100%; width: 1fr; padding: 1 1 0 1; scrollbar-size-vertical: 1; }
        & PromptInput { dock: bottom; margin: 0 0 1 0; }
        & .context-note { color: $text-muted; text-style: italic; margin: 0 0 1 2; height: auto; }
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
        hf_cache: Path | None = None,
        context_size: int | None = None,
        thinking: bool | None = None,
        offer_first_run: bool = False,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.history = history
        self.home = home  # the engine's squish home: the embedded model, squish's records of models
        self.endpoint = endpoint  # the hub for pulls; None is HF_ENDPOINT or huggingface.co
        self.hf_cache = hf_cache  # the Hugging Face cache models are listed from and pulled into; None: the default
        self.hw = hw  # the machine for the picker's fit column; None detects it each time
        self.model_name = model  # what the user asked for (--model or /model)
        self.default_model = default_model  # without one and without a resumed chat's; None: embedded
        self.model_info = None  # set once loaded
        self.model_loading = True  # the load starts once the first frame is drawn (on_mount)
        self.default_system = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.resume_id = resume
        self.chat: Chat | None = None  # created on the first message or /system
        self.system_prompt = system_prompt
        self.context: list[dict] = []  # the conversation as the engine sees it, without the system prompt
        self.stream = None
        self.pending: ChatRequest | None = None  # a turn sent before the model was ready: sent on load
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
        self.agent_tools = AgentTools(workspace, home)  # the workspace is the current directory unless given
        self.agent_mode = False
        self.agent_run: AgentRun | None = None
        self.context_size = context_size  # tokens (/ctx); None: the model's window
        self.thinking = thinking  # enable_thinking for templates that take it (/think); None: theirs
        self.thinking_block: ThinkingBlock | None = None  # the current answer's
        self.left_out = 0  # messages the engine's last cut left out (a new cut gets a note)
        self.offer_first_run = offer_first_run

    def compose(self) -> ComposeResult:
        yield ModelBar()
        if self.offer_first_run:
            yield FirstRunOffer(self.home, self.hw)
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

    def on_key(self, event: events.Key) -> None:
        """Typing that reaches the screen itself, not the prompt, goes to the prompt, Enter
        included: keys typed while the app starts are routed before the prompt has the focus,
        and a click elsewhere (the conversation) must not swallow the next keys either. An Enter
        typed before the app switched the terminal to raw mode arrives as a line feed (Ctrl+J)."""
        sends = event.key in ("enter", "ctrl+j")
        if self.app.screen is not self or not (event.is_printable or sends):
            return
        if self.focused not in (None, self.prompt, self.conversation):
            return  # a widget with keys of its own (an approval card's a/s/d) has them
        event.stop()
        self.prompt.focus()
        if not sends:
            self.prompt.insert(event.character)
        elif self.prompt.text.strip():
            self.prompt.post_message(PromptInput.Submitted(self.prompt.text))

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
        return self.stream is not None or self.agent_run is not None or self.pending is not None

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
        self.thinking_block = None
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + self.context
        request = ChatRequest(
            list(messages),
            session=self.session_key(chat),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            **self.request_options(chat),
        )
        self.stats_panel.show_turn(None, None, 0)
        if self.model_info is None:  # the load may not even be queued yet: the turn waits for it
            self.pending = request
            self.stats_panel.set_state("waiting for the model")
            return
        self.submit(request)

    def submit(self, request: ChatRequest) -> None:
        self.stream = self.engine.generate(request)
        self.stats_panel.set_state("prefilling")
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
        self.close_thinking()
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
        self.stats_panel.show_turn(
            live.ttft_ms, live.decode_tps, live.generation_tokens, drafts=(live.accepted_tokens, live.draft_tokens)
        )
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
        thinking = self.close_thinking(stats)
        if answer.text or thinking:  # thinking stays out of the context, as thinking models expect
            self.history.update_message(answer_id, answer.text, finish, stored, thinking)
        else:
            self.history.delete_message(answer_id)
        if answer.text:
            self.context.append({"role": "assistant", "content": answer.text})
            self.last_answer = answer.text
        if stats is not None:
            self.last_stats = stats
            self.turns.append(stats)
            self.stats_panel.show_turn(
                stats.ttft_ms,
                stats.decode_tps,
                stats.generation_tokens,
                stats.prefill_tps,
                drafts=(stats.accepted_tokens, stats.draft_tokens),
            )
            if stats.generation_tokens > 1:
                self.stats_panel.add_turn_rate(stats.decode_tps)
            self.stats_panel.show_memory(stats.active_memory_gb, stats.peak_memory_gb, stats.rss_gb)
            self.show_context(stats)
        if self.chat is not None and self.model_name:
            self.history.set_model(self.chat.id, self.model_name)
        self.stats_panel.set_state(
            "loading model" if self.model_loading else "ready" if self.model_info else "no model"
        )
        self.stream = self.answer = self.answer_id = None  # last: `busy` holds until the turn is recorded

    def action_stop(self) -> None:
        if self.pending is not None:
            self.pending = None
            self.post_message(TurnFinished("cancelled", None, None))
        elif self.agent_run is not None and not self.agent_run.cancelled:
            self.agent_run.cancel()
            self.stats_panel.set_state("stopping the agent")
        elif self.stream is not None and not self.stream.cancelled:
            self.stream.cancel()
            self.stats_panel.set_state("stopping")

    # Chats.

    def ensure_chat(self) -> Chat:
        if self.chat is None:
            self.chat = self.history.create_chat(self.model_name, self.system_prompt)
        return self.chat

    async def show_chat(self, chat: Chat | None) -> None:
        if self.chat is not None and (chat is None or chat.id != self.chat.id):
            self.save_cache()  # switching chats: the one we leave keeps its KV cache on disk
        await self.conversation.remove_children()
        self.chat = chat
        self.system_prompt = chat.system_prompt if chat else self.default_system
        self.context = self.history.context(chat.id) if chat else []
        self.last_answer = ""
        self.last_stats = None
        self.turns = []
        self.left_out = 0
        widgets = []
        if chat is not None:
            for message in self.history.messages(chat.id):
                if chat.summary and message.id == chat.context_from:
                    widgets.append(compact_note(chat.summary))
                if message.thinking:
                    stats = message.stats
                    seconds = stats.get("thinking_ms", 0) / 1000
                    widgets.append(ThinkingBlock(message.thinking, stats.get("thinking_tokens", 0), seconds, done=True))
                footer, css = (
                    footer_for(message.stats, message.finish_reason) if message.role == "assistant" else ("", "")
                )
                if message.content or not message.thinking:
                    widgets.append(ChatMessage(message.role, message.content, footer, css))
                if message.role == "assistant" and message.content:
                    self.last_answer = message.content
        await self.conversation.mount_all(widgets)
        self.conversation.scroll_end(animate=False)
        self.model_bar.show_title(chat.title if chat else "")
        self.stats_panel.show_turn(None, None, None)
        self.stats_panel.show_context(None)

    def resume(self, chat_id: int) -> None:
        chat = self.history.chat(chat_id)
        if chat is None:
            self.notify(f"chat {chat_id} no longer exists", severity="error")
            return
        self.chat = chat
        self.run_worker(self.show_chat(chat), group="show", exclusive=True)
