"""Step cards for agent mode: one card per agent step, built from squish.agent events.

`AgentLog` is the widget an app mounts: feed it every agent event with `add_event` (on the UI
thread, e.g. through `App.call_from_thread`) and, for approvals, hand it the `Pending`
question with `ask`. Each `StepCard` shows the calls with pretty JSON arguments, the
validation result, each retry with its reason, the approval prompt (allow once / allow for
this session / deny, with a diff or command preview), the result (collapsible, truncated)
and timing. `ApprovalPrompt` posts `ApprovalPrompt.Decided` when the user answers.
"""

import json

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Collapsible, Static

from squish.agent.approval import ALLOW_ONCE, ALLOW_SESSION, DENY, Pending
from squish.agent.events import (
    Answer,
    ApprovalGiven,
    ApprovalNeeded,
    CallProposed,
    ModelReplied,
    ModelText,
    Notice,
    Retrying,
    StepStarted,
    Stopped,
    ToolChosen,
    ToolFinished,
    Validated,
)

RESULT_LINES = 40
RESULT_CHARS = 4000
LIVE_CHARS = 160
DECISION_WORDS = {ALLOW_ONCE: "allowed once", ALLOW_SESSION: "allowed for this session", DENY: "denied"}


def truncate(text: str, lines: int = RESULT_LINES, chars: int = RESULT_CHARS) -> str:
    """At most `lines` lines and `chars` characters, saying how much was left out."""
    kept = text[:chars].splitlines()[:lines]
    shown = "\n".join(kept)
    hidden = len(text.splitlines()) - len(kept)
    if hidden > 0 or len(text) > len(shown) + hidden:
        shown += f"\n… {max(hidden, 1)} more line(s) not shown"
    return shown


def preview_renderable(preview: str):
    if preview.startswith(("--- ", "@@")):
        return Syntax(preview, "diff", theme="ansi_dark", word_wrap=True)
    if preview.startswith("$ "):
        return Syntax(preview, "bash", theme="ansi_dark", word_wrap=True)
    return Text(preview)


class CallView(Vertical):
    """A tool call: its name, its arguments as pretty JSON, and the validation result."""

    DEFAULT_CSS = """
    CallView { height: auto; padding: 0 1; }
    CallView .call-name { text-style: bold; color: $accent; }
    CallView .call-args { height: auto; max-height: 16; overflow-y: auto; background: $boost; }
    CallView .validation { height: auto; }
    CallView .validation.ok { color: $success; }
    CallView .validation.invalid { color: $error; }
    """

    def __init__(self, call_id: str, name: str, arguments) -> None:
        super().__init__(id=f"call-{call_id}")
        self.call_id = call_id
        self.tool_name = name
        self.arguments = arguments
        self.validation = Static("checking…", classes="validation")

    def compose(self) -> ComposeResult:
        yield Static(Text(f"▸ {self.tool_name}"), classes="call-name")
        pretty = json.dumps(self.arguments, indent=2, ensure_ascii=False)
        yield Static(Syntax(pretty, "json", theme="ansi_dark", word_wrap=True), classes="call-args")
        yield self.validation

    def validated(self, ok: bool, errors: tuple[str, ...]) -> None:
        self.validation.update(Text("✓ arguments match the schema") if ok else Text("✗ " + "; ".join(errors)))
        self.validation.set_class(ok, "ok")
        self.validation.set_class(not ok, "invalid")


class ApprovalPrompt(Vertical):
    """Asks whether a risky call may run, with its preview. Keys: a, s, d."""

    DEFAULT_CSS = """
    ApprovalPrompt { height: auto; border: round $warning; padding: 0 1; margin: 0 1; }
    ApprovalPrompt .approval-title { text-style: bold; color: $warning; }
    ApprovalPrompt .preview { height: auto; max-height: 20; overflow-y: auto; background: $boost; }
    ApprovalPrompt Horizontal { height: auto; }
    ApprovalPrompt Button { margin-right: 1; min-width: 12; }
    ApprovalPrompt .decision { height: auto; text-style: italic; }
    """
    BINDINGS = [
        Binding("a", "decide('allow_once')", "Allow once"),
        Binding("s", "decide('allow_session')", "Allow for session"),
        Binding("d", "decide('deny')", "Deny"),
    ]
    can_focus = True

    class Decided(Message):
        """The user answered an approval prompt."""

        def __init__(self, prompt: "ApprovalPrompt", call_id: str, decision: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.call_id = call_id
            self.decision = decision

    def __init__(self, request: ApprovalNeeded, pending: Pending | None = None) -> None:
        super().__init__(id=f"approval-{request.call.id}")
        self.request = request
        self.pending = pending
        self.decision: str | None = None
        waiting = pending is None
        self.buttons = [
            Button("Allow once (a)", id=ALLOW_ONCE, variant="success", disabled=waiting),
            Button("Allow for session (s)", id=ALLOW_SESSION, variant="primary", disabled=waiting),
            Button("Deny (d)", id=DENY, variant="error", disabled=waiting),
        ]
        self.choices = Horizontal(*self.buttons)
        self.decision_line = Static("", classes="decision")

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.request.call.name} needs your approval"), classes="approval-title")
        yield Static(preview_renderable(self.request.preview), classes="preview")
        yield self.choices
        yield self.decision_line

    def on_mount(self) -> None:
        if self.pending is not None and self.decision is None:
            self.focus()

    def attach(self, pending: Pending) -> None:
        """Enable the buttons: the agent thread is now waiting on `pending`."""
        self.pending = pending
        for button in self.buttons:
            button.disabled = False
        if self.is_mounted:
            self.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_decide(event.button.id)

    def action_decide(self, decision: str) -> None:
        if self.pending is None or self.decision is not None:
            return
        self.pending.resolve(decision)
        self.post_message(self.Decided(self, self.request.call.id, decision))
        self.show_decision(decision, "you")

    def show_decision(self, decision: str, source: str) -> None:
        self.decision = decision
        for button in self.buttons:
            button.disabled = True
        self.choices.display = False
        self.decision_line.update(Text(f"{DECISION_WORDS.get(decision, decision)} ({source})"))


class ResultView(Collapsible):
    """A tool result: collapsed to one title line, expanded to the truncated output."""

    DEFAULT_CSS = """
    ResultView { height: auto; margin: 0 1; padding: 0; border: none; background: transparent; }
    ResultView.ok CollapsibleTitle { color: $success; }
    ResultView.error CollapsibleTitle { color: $error; }
    ResultView .result-body { height: auto; max-height: 24; overflow-y: auto; background: $boost; }
    """

    def __init__(self, event: ToolFinished) -> None:
        lines = event.output.count("\n") + 1 if event.output else 0
        mark = "✓" if event.ok else "✗"
        title = f"{mark} {event.name} · {lines} line(s) · {format_ms(event.elapsed_ms)}"
        body = Static(Text(truncate(event.output) or "(no output)"), classes="result-body")
        super().__init__(body, title=title, collapsed=event.ok, id=f"result-{event.call_id}")
        self.add_class("ok" if event.ok else "error")
        self.output = event.output


def format_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


class StepCard(Vertical):
    """One step of an agent run, updated as its events arrive."""

    DEFAULT_CSS = """
    StepCard { height: auto; border: round $primary-background-lighten-2; padding: 0 0 0 0; margin: 0 0 1 0; }
    StepCard .step-title { text-style: bold; padding: 0 1; }
    StepCard .live { color: $text-muted; padding: 0 1; height: auto; }
    StepCard .retry { color: $warning; padding: 0 1; height: auto; }
    StepCard .notice { color: $text-muted; text-style: italic; padding: 0 1; height: auto; }
    StepCard .answered { color: $success; padding: 0 1; }
    """

    def __init__(self, step: int, id: str | None = None) -> None:
        super().__init__(id=id or f"step-{step}")
        self.step = step
        self.model_ms = 0.0
        self.tool_ms = 0.0
        self.live_text = ""
        self.heading = Static(self.title_text(), classes="step-title")
        self.live = Static("", classes="live")
        self.live.display = False
        self.calls: dict[str, CallView] = {}
        self.prompts: dict[str, ApprovalPrompt] = {}
        self.early: list = []  # events that came before the card was mounted
        self.ready = False

    def compose(self) -> ComposeResult:
        yield self.heading
        yield self.live

    def on_mount(self) -> None:
        self.ready = True
        early, self.early = self.early, []
        for event in early:
            self.add_event(event)

    def title_text(self) -> Text:
        parts = [f"Step {self.step}"]
        if self.model_ms:
            parts.append(f"model {format_ms(self.model_ms)}")
        if self.tool_ms:
            parts.append(f"tools {format_ms(self.tool_ms)}")
        return Text(" · ".join(parts))

    def refresh_title(self) -> None:
        self.heading.update(self.title_text())

    def add_event(self, event) -> None:
        if not self.ready:  # mounting now would put the parts above the heading
            self.early.append(event)
            return
        live = self.live
        if isinstance(event, ModelText):
            self.live_text = (self.live_text + event.text)[-LIVE_CHARS:]
            live.update(Text(" ".join(self.live_text.split())))
            live.display = True
        elif isinstance(event, ModelReplied):
            self.model_ms += event.elapsed_ms
            self.live_text = ""
            live.display = False
            self.refresh_title()
        elif isinstance(event, CallProposed):
            self.calls[event.call.id] = CallView(event.call.id, event.call.name, event.call.arguments)
            self.mount(self.calls[event.call.id])
        elif isinstance(event, Validated) and event.call_id in self.calls:
            self.calls[event.call_id].validated(event.ok, event.errors)
        elif isinstance(event, Retrying):
            text = f"↻ retry {event.attempt} (temperature {event.temperature:g}): {event.reason}"
            self.mount(Static(Text(text), classes="retry"))
        elif isinstance(event, ApprovalNeeded):
            prompt = self.prompts.get(event.call.id)
            if prompt is None:
                self.add_prompt(ApprovalPrompt(event))
            elif not prompt.is_attached:
                self.mount(prompt)  # made by AgentLog.ask before this card was mounted
        elif isinstance(event, ApprovalGiven):
            prompt = self.prompts.get(event.call_id)
            if prompt is not None:
                if prompt.decision is None:
                    prompt.show_decision(event.decision, event.source)
            else:
                text = f"{DECISION_WORDS.get(event.decision, event.decision)} ({event.source})"
                self.mount(Static(Text(text), classes="notice"))
        elif isinstance(event, ToolFinished):
            self.tool_ms += event.elapsed_ms
            self.mount(ResultView(event))
            self.refresh_title()
        elif isinstance(event, Notice):
            self.mount(Static(Text(event.text), classes="notice"))
        elif isinstance(event, ToolChosen):
            ranked = ", ".join(f"{name} {score:.1f}" for name, score in event.ranking[:3])
            self.mount(Static(Text(f"→ chose {event.name or 'no tool'} ({ranked})"), classes="notice"))
        elif isinstance(event, Answer):
            self.mount(Static(Text("✓ answered"), classes="answered"))

    def add_prompt(self, prompt: ApprovalPrompt) -> None:
        self.prompts[prompt.request.call.id] = prompt
        if self.ready:
            self.mount(prompt)
        else:
            self.early.append(prompt.request)


class AgentLog(VerticalScroll):
    """All step cards of agent runs; routes each event to its step's card."""

    DEFAULT_CSS = """
    AgentLog { height: auto; max-height: 100%; }
    AgentLog .stopped { padding: 0 1; height: auto; }
    AgentLog .stopped.failed { color: $error; }
    AgentLog .run-notice { color: $text-muted; text-style: italic; padding: 0 1; height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cards: dict[int, StepCard] = {}
        self.run_index = 0

    def add_event(self, event) -> None:
        """Apply one agent event. Call on the UI thread."""
        if isinstance(event, StepStarted):
            if event.step == 1 or event.step not in self.cards:
                if event.step == 1:
                    self.run_index += 1
                    self.cards = {}
                card = StepCard(event.step, id=f"run{self.run_index}-step-{event.step}")
                self.cards[event.step] = card
                self.mount(card)
        elif isinstance(event, Stopped):
            failed = event.reason not in ("answer", "proposed")
            line = Static(Text(f"■ {event.reason}: {event.message}"), classes="stopped")
            line.set_class(failed, "failed")
            self.mount(line)
        elif isinstance(event, Notice) and (event.step == 0 or event.step not in self.cards):
            self.mount(Static(Text(event.text), classes="run-notice"))
        elif getattr(event, "step", None) in self.cards:
            self.cards[event.step].add_event(event)
        self.scroll_end(animate=False)

    def ask(self, pending: Pending) -> None:
        """Enable the approval prompt for `pending` (mounting it if its ApprovalNeeded has not come)."""
        request = pending.request
        if request.step not in self.cards:
            self.add_event(StepStarted(request.step))
        card = self.cards[request.step]
        prompt = card.prompts.get(request.call.id)
        if prompt is not None:
            prompt.attach(pending)
        else:
            card.add_prompt(ApprovalPrompt(request, pending))
        self.scroll_end(animate=False)

    def deny_pending(self) -> None:
        """Answer every open approval with deny (the user aborted the run with Esc)."""
        for card in self.cards.values():
            for prompt in card.prompts.values():
                if prompt.pending is not None and prompt.decision is None:
                    prompt.action_decide(DENY)
