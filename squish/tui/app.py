"""The Textual chat app that bare `squish` opens.

The app never calls MLX: it sends requests to the `Engine` (one thread owns every MLX
call) and reads each request's event stream in a Textual thread worker. See docs/tui.md.
"""

import sys
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from ..history import FILE, History, HistoryError
from ..models import settings
from ..models.hardware import Hardware
from ..models.store import squish_home
from . import commands
from .screens.chat import ChatScreen
from .widgets.first_run import needs_first_run


class SquishApp(App):
    TITLE = "squish"

    def __init__(
        self,
        engine,
        history: History,
        model: str | None = None,
        continue_last: bool = False,
        default_model: str | None = None,
        system_prompt: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        home: Path | None = None,
        endpoint: str | None = None,
        hw: Hardware | None = None,
        offer_first_run: bool = False,
        workspace=None,
        hf_cache: Path | None = None,
        chat_id: int | None = None,
        context_size: int | None = None,
        thinking: bool | None = None,
    ) -> None:
        """`model` is the model asked for (--model); without it a continued chat loads its own
        model, and anything else `default_model` (the configured default; None: the embedded one).
        `home` is the engine's squish home (None: $SQUISH_HOME or the default), `endpoint` the hub
        for pulls (None: HF_ENDPOINT or huggingface.co), `hw` the machine (None: detected),
        `hf_cache` the Hugging Face cache models are listed from and pulled into (None: HF_HUB_CACHE).
        `offer_first_run` shows the first-run offer (above the chat; it never takes the keyboard)
        when no model was asked for, no chat is continued and the config holds no choice yet;
        `run_app` sets it. `chat_id` opens that chat (--chat), `context_size` is --ctx (None: the
        setting, else the model's window), `thinking` is --think."""
        super().__init__()
        self.engine = engine
        self.history = history
        self.home, self.hw = home, hw
        self.first_run = (
            offer_first_run
            and model is None
            and default_model is None
            and not continue_last
            and chat_id is None
            and needs_first_run(home)
        )
        last = history.last_chat() if continue_last else None
        if chat_id is not None:
            last = history.chat(chat_id)
        self.chat_screen = ChatScreen(
            engine,
            history,
            model=model,
            default_model=default_model,
            resume=last.id if last else None,
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            home=home,
            endpoint=endpoint,
            hw=hw,
            workspace=workspace,
            hf_cache=hf_cache,
            context_size=context_size if context_size is not None else settings.context_size(home),
            thinking=thinking,
            offer_first_run=self.first_run,
        )
        self._no_chat_to_continue = continue_last and last is None

    def get_default_screen(self) -> Screen:
        # The chat screen is the app's first screen, not one pushed on mount: keys typed before
        # the first frame then reach its prompt instead of a placeholder screen.
        return self.chat_screen

    def on_mount(self) -> None:
        if self._no_chat_to_continue:
            self.notify("no saved chat to continue: this is a new one")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is not self.chat_screen:
            return
        for command in commands.COMMANDS.values():
            if command.args.startswith("<"):
                callback = self._prefill(f"/{command.name} ")
            else:
                callback = self._runner(command.name)
            yield SystemCommand(f"/{command.name}", command.help, callback)

    def _runner(self, name: str):
        async def run() -> None:
            await self.chat_screen.run_command(f"/{name}")

        return run

    def _prefill(self, text: str):
        def prefill() -> None:
            prompt = self.chat_screen.prompt
            prompt.load_text(text)
            prompt.move_cursor(prompt.document.end)
            prompt.focus()

        return prefill

    def on_unmount(self) -> None:
        stream = self.chat_screen.stream
        if stream is not None:
            stream.cancel()
        if self.chat_screen.agent_run is not None:
            self.chat_screen.agent_run.cancel()
        # Queued before run_app shuts the engine down, which finishes queued requests first.
        self.chat_screen.save_cache(wait=True)


def run_app(
    model: str | None = None,
    default_model: str | None = None,
    continue_last: bool = False,
    system_prompt: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.2,
    chat_id: int | None = None,
    context_size: int | None = None,
    thinking: bool | None = None,
) -> int:
    from ..engine.engine import ChatRequest, Engine, validate
    from ..errors import UserError

    try:
        probe = ChatRequest([{"role": "user", "content": "-"}], max_tokens=max_tokens, temperature=temperature)
        probe.context_size = context_size
        validate(probe)
    except UserError as exc:
        print(f"squish: error: {exc}", file=sys.stderr)
        return 1
    try:
        history = History(squish_home() / FILE)
    except HistoryError as exc:
        print(f"squish: error: {exc}", file=sys.stderr)
        return 2
    if chat_id is not None and history.chat(chat_id) is None:
        print(f"squish: error: no chat {chat_id}: squish chats lists them", file=sys.stderr)
        history.close()
        return 1
    engine = Engine()
    app = SquishApp(
        engine,
        history,
        model=model,
        default_model=default_model,
        continue_last=continue_last,
        system_prompt=system_prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        offer_first_run=True,
        chat_id=chat_id,
        context_size=context_size,
        thinking=thinking,
    )
    try:
        app.run()
    finally:
        engine.shutdown()
        history.close()
    return app.return_code or 0
