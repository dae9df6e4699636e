"""What the agent loop reports: events as they happen, and the step records built from them.

The loop calls `on_event` with each event, in order, on the thread that runs it; the last
event is always `Stopped`. A UI renders events live (the TUI's step cards); `Transcript`
folds the same events into `StepRecord`s for `--json` and for tests. Plain dataclasses: no
Textual, no MLX.
"""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    id: str  # "s2c1": step 2, call 1; "s2r1c1": the same in the first retry
    name: str
    arguments: Any  # a dict once validated; whatever the model wrote before


@dataclass(frozen=True)
class StepStarted:
    step: int


@dataclass(frozen=True)
class ModelText:
    """A piece of streamed model output (for live display)."""

    step: int
    text: str


@dataclass(frozen=True)
class ModelReplied:
    """One finished generation of a step (a step has more than one after retries)."""

    step: int
    attempt: int  # 0 for the first try, 1 and 2 for retries, -1 for the answer prompt
    text: str
    elapsed_ms: float
    decode_tps: float
    finish_reason: str
    constrained: bool


@dataclass(frozen=True)
class CallProposed:
    step: int
    call: ToolCall


@dataclass(frozen=True)
class Validated:
    step: int
    call_id: str
    ok: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolChosen:
    """The router chose the tool before the call was written (squish.agent.choose)."""

    step: int
    name: str | None  # None: no tool is needed
    ranking: tuple  # (candidate, score) pairs, best first
    mode: str  # how it chose: "model", "words" or "both"


@dataclass(frozen=True)
class Retrying:
    """The last reply was malformed or invalid; the model is asked again with new sampling."""

    step: int
    attempt: int  # 1 or 2
    reason: str
    temperature: float
    seed: int


@dataclass(frozen=True)
class ApprovalNeeded:
    step: int
    call: ToolCall
    preview: str  # a diff for edits, the command for the shell


@dataclass(frozen=True)
class ApprovalGiven:
    step: int
    call_id: str
    decision: str  # approval.ALLOW_ONCE, ALLOW_SESSION or DENY
    source: str  # "user", "session" (allowed earlier), "--yes", "policy" (no one to ask)


@dataclass(frozen=True)
class ToolFinished:
    step: int
    call_id: str
    name: str
    ok: bool
    output: str  # what the model gets back (an error message when not ok)
    elapsed_ms: float


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not a step of its own (step 0: the whole run)."""

    step: int
    text: str


@dataclass(frozen=True)
class Answer:
    step: int
    text: str


@dataclass(frozen=True)
class Stopped:
    """Always the last event. reason: answer, proposed, max_steps, repetition, invalid, cancelled, error."""

    reason: str
    message: str


@dataclass
class CallRecord:
    id: str
    name: str
    arguments: Any
    valid: bool | None = None
    errors: list[str] = field(default_factory=list)
    approval: str | None = None
    ok: bool | None = None
    output: str | None = None
    elapsed_ms: float | None = None


@dataclass
class StepRecord:
    index: int
    replies: list[dict] = field(default_factory=list)
    retries: list[dict] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    answer: str | None = None
    notices: list[str] = field(default_factory=list)
    chosen: dict | None = None  # the router's choice: {"tool", "mode", "ranking"}

    def public(self) -> dict:
        return asdict(self)


class Transcript:
    """Folds events into step records."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.answer: str | None = None
        self.notices: list[str] = []  # notices about the whole run
        self.stopped: Stopped | None = None

    def _call(self, call_id: str) -> CallRecord:
        return next(c for c in reversed(self.steps[-1].calls) if c.id == call_id)

    def add(self, event) -> None:
        if isinstance(event, StepStarted):
            self.steps.append(StepRecord(event.step))
        elif isinstance(event, ModelReplied):
            self.steps[-1].replies.append(
                {
                    "attempt": event.attempt,
                    "text": event.text,
                    "elapsed_ms": round(event.elapsed_ms, 1),
                    "decode_tps": round(event.decode_tps, 2),
                    "finish_reason": event.finish_reason,
                    "constrained": event.constrained,
                }
            )
        elif isinstance(event, CallProposed):
            self.steps[-1].calls.append(CallRecord(event.call.id, event.call.name, event.call.arguments))
        elif isinstance(event, Validated):
            record = self._call(event.call_id)
            record.valid, record.errors = event.ok, list(event.errors)
        elif isinstance(event, ToolChosen):
            self.steps[-1].chosen = {
                "tool": event.name,
                "mode": event.mode,
                "ranking": [[name, round(score, 2)] for name, score in event.ranking],
            }
        elif isinstance(event, Retrying):
            self.steps[-1].retries.append(
                {"attempt": event.attempt, "reason": event.reason, "temperature": event.temperature, "seed": event.seed}
            )
        elif isinstance(event, ApprovalGiven):
            self._call(event.call_id).approval = event.decision
        elif isinstance(event, ToolFinished):
            record = self._call(event.call_id)
            record.ok, record.output, record.elapsed_ms = event.ok, event.output, round(event.elapsed_ms, 1)
        elif isinstance(event, Notice):
            if self.steps and event.step:
                self.steps[-1].notices.append(event.text)
            else:
                self.notices.append(event.text)
        elif isinstance(event, Answer):
            self.steps[-1].answer = self.answer = event.text
        elif isinstance(event, Stopped):
            self.stopped = event
