"""What the model sees of a chat: its context size and the turns left out, /compact, /ctx,
/think, a thinking model's <think> block, and the chat's KV cache saved beside the history.

The engine does the fitting (squish/engine/context.py), the splitting (squish/engine/thinking.py)
and the saving (squish/engine/prompt_cache.py); this part asks for them and shows what happened.
The KV cache is saved when the chat is switched (/new, /chats) and when the app quits; opening a
chat hands the engine its cache file, so only the new message is prefilled (docs/chats.md).
"""

from textual import work
from textual.message import Message
from textual.widgets import Static
from textual.worker import get_current_worker

from ....engine.engine import MIN_CONTEXT, ChatRequest
from ....engine.events import Error, EventStream, Token
from ....history import SUMMARY_REQUEST, Chat
from ....models import settings
from ...messages import EngineNotice, ThinkingArrived
from ...widgets.message import ChatMessage
from ...widgets.thinking import ThinkingBlock


class CacheFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Compacted(Message):
    def __init__(self, summary: str, context_from: int, error: str | None) -> None:
        super().__init__()
        self.summary = summary
        self.context_from = context_from
        self.error = error


def note(text: str) -> Static:
    return Static(text, classes="context-note", markup=False)


def compact_note(summary: str) -> Static:
    return note(f"/compact: the model sees this summary instead of the messages above (they stay saved)\n{summary}")


class ChatContext:
    """ChatScreen's part for the model's view of the chat (mixin of ChatScreen)."""

    def session_key(self, chat: Chat) -> str:
        return f"chat-{chat.id}"

    def request_options(self, chat: Chat) -> dict:
        """The ChatRequest fields this part decides: context size, the saved cache, thinking."""
        options = {"context_size": self.context_size, "cache_file": self.history.cache_path(chat.id)}
        info = self.model_info
        if self.thinking is not None and info is not None and info.thinking_switch:
            options["template_args"] = {"enable_thinking": self.thinking}
        return options

    # The saved KV cache.

    def save_cache(self, wait: bool = False) -> None:
        """Ask the engine to save this chat's KV cache; failures come back as a notification
        (not when the app is closing: then the request is only queued before the shutdown)."""
        if self.chat is None or self.history.chat(self.chat.id) is None:
            return  # no chat yet, or it was just deleted
        stream = self.engine.save_session(
            self.session_key(self.chat), self.history.cache_path(self.chat.id), settings.kv_cache_limit_bytes(self.home)
        )
        if not wait:
            self._cache_worker(stream)

    @work(thread=True, group="cache", exit_on_error=False)
    def _cache_worker(self, stream: EventStream) -> None:
        worker = get_current_worker()
        for event in stream.events(stop=lambda: worker.is_cancelled):
            if isinstance(event, Error):
                self.post_message(CacheFailed(event.message))

    def on_cache_failed(self, message: CacheFailed) -> None:
        self.notify(f"{message.text}\nthe chat is saved; reopening it prefills its history", severity="warning")

    def forget_cache(self, chat: Chat) -> None:
        from ....engine import prompt_cache

        self.engine.drop_session(self.session_key(chat))
        prompt_cache.remove(self.history.cache_path(chat.id))

    # What the engine says about a turn.

    async def on_engine_notice(self, message: EngineNotice) -> None:
        if not message.left_out:
            self.notify(message.text, title="KV cache", severity="warning")
            return
        if message.left_out == self.left_out:
            return  # the same cut as the last turn: said already
        self.left_out = message.left_out
        text = f"{message.text}; /compact replaces them with a summary"
        if self.answer is not None:
            await self.conversation.mount(note(text), before=self.answer)
        else:
            self.notify(text)

    def show_context(self, stats) -> None:
        if stats is None or not stats.context_size:
            self.stats_panel.show_context(None)
        else:
            used = stats.prompt_tokens + stats.generation_tokens
            self.stats_panel.show_context(used, stats.context_size, stats.kv_cache_bytes)

    # Thinking.

    async def on_thinking_arrived(self, message: ThinkingArrived) -> None:
        if self.answer is None:
            return
        if self.thinking_block is None:
            self.thinking_block = ThinkingBlock()
            await self.conversation.mount(self.thinking_block, before=self.answer)
        self.thinking_block.append(message.text, message.tokens)

    def close_thinking(self, stats=None) -> str:
        """Collapse the block once the answer starts; returns its text (for the history)."""
        block = self.thinking_block
        if block is None:
            return ""
        if not block.done or stats is not None:
            block.finish(stats.thinking_tokens if stats else None, stats.thinking_ms / 1000 if stats else None)
        return block.text.strip("\n")

    # Commands.

    async def command_ctx(self, argument: str) -> None:
        window = self.model_info.context_length if self.model_info else None
        if not argument:
            size = self.context_size or window
            shown = f"{size} tokens" if size else "the model's window"
            self.notify(f"context: {shown}" + (f" (the model's window: {window})" if window else ""))
            return
        try:
            size = int(argument)
        except ValueError:
            size = 0
        if size < MIN_CONTEXT:
            self.notify(f"/ctx takes a number of tokens, at least {MIN_CONTEXT}", severity="error")
            return
        self.context_size = size
        settings.set_context_size(size, self.home)
        capped = f" (the model's window is {window}: that is the most it uses)" if window and size > window else ""
        self.notify(f"context: {size} tokens{capped}; remembered for later chats")

    async def command_think(self, argument: str) -> None:
        info = self.model_info
        if argument not in ("on", "off"):
            state = {True: "on", False: "off", None: "the template's default"}[self.thinking]
            self.notify(f"thinking: {state} (/think on or /think off)")
            return
        if info is None or not info.thinking_switch:
            name = info.name if info else "this model"
            self.notify(f"{name}'s chat template has no thinking switch", severity="warning")
            return
        self.thinking = argument == "on"
        self.notify(f"thinking {argument} for {info.name}")

    async def command_compact(self, _argument: str) -> None:
        if self.refuse_while_busy("compact"):
            return
        chat = self.chat
        messages = [m for m in self.history.messages(chat.id) if m.content] if chat else []
        if chat is not None and chat.context_from is not None:
            messages = [m for m in messages if m.id >= chat.context_from]
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if len(users) < 2:
            self.notify("nothing to compact yet: the chat has one turn", severity="warning")
            return
        keep = messages[users[-1]]  # the last turn stays as it is
        older = self.context[: len(self.context) - (len(messages) - users[-1])]
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        request_messages = system + older + [{"role": "user", "content": SUMMARY_REQUEST}]
        request = ChatRequest(
            request_messages,
            session=self.session_key(chat),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            **{k: v for k, v in self.request_options(chat).items() if k != "template_args"},
        )
        self.stream = self.engine.generate(request)
        self.stats_panel.set_state("writing a summary (/compact)")
        self._compact_worker(self.stream, keep.id)

    @work(thread=True, group="generate", exit_on_error=False)
    def _compact_worker(self, stream: EventStream, context_from: int) -> None:
        worker = get_current_worker()
        text, error = [], None
        for event in stream.events(stop=lambda: worker.is_cancelled):
            if isinstance(event, Token):
                text.append(event.text)
            elif isinstance(event, Error):
                error = event.message
        if stream.cancelled and error is None:
            error = "stopped"
        self.post_message(Compacted("".join(text).strip(), context_from, error))

    async def on_compacted(self, message: Compacted) -> None:
        self.stream = None
        self.stats_panel.set_state("ready" if self.model_info else "no model")
        if message.error or not message.summary:
            self.notify(message.error or "the model wrote no summary", title="/compact: nothing changed", severity="warning")
            return
        self.history.set_summary(self.chat.id, message.summary, message.context_from)
        self.chat = self.history.chat(self.chat.id)
        self.context = self.history.context(self.chat.id)
        self.left_out = 0
        last_question = [m for m in self.conversation.query(ChatMessage) if m.role == "user"][-1]
        await self.conversation.mount(compact_note(message.summary), before=last_question)
        self.conversation.scroll_end(animate=False)
        self.notify("older turns summarized for the model; the history keeps them")
