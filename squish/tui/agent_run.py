"""Agent mode in the chat app: runs the agent loop off the UI loop and shows its steps as cards.

The loop (`squish.agent.loop.Agent`) runs in a Textual thread worker; it talks to the Engine
only through its own requests (the engine thread makes every MLX call). The worker never
touches widgets: it posts `AgentEvent` for every loop event and `AgentFinished` at the end,
and the chat screen applies them on the UI loop. Approvals of risky tools are the one place
the worker waits for the user: `ask` posts `AgentAsk` with a `Pending` and blocks on it; the
approval card's buttons (or Esc, which denies) resolve it from the UI thread.
"""

import threading
from pathlib import Path

from textual.message import Message

from ..agent.approval import DENY, Approvals, Pending
from ..agent.events import ApprovalNeeded
from ..agent.loop import Agent, AgentConfig, AgentResult
from ..agent.prompt import template_supports_tools
from ..agent.sandbox import Workspace
from ..agent.tools import Registry, ToolContext, builtin_tools
from .widgets.agent_cards import AgentLog


class AgentEvent(Message):
    """One squish.agent event, for the run's AgentLog."""

    def __init__(self, log: AgentLog, event) -> None:
        super().__init__()
        self.log = log
        self.event = event


class AgentAsk(Message):
    """A risky call waits for the user's decision; the worker blocks on `pending`."""

    def __init__(self, log: AgentLog, pending: Pending) -> None:
        super().__init__()
        self.log = log
        self.pending = pending


class AgentFinished(Message):
    """The run ended: `result` is None when the loop itself failed (`error` says how)."""

    def __init__(self, run: "AgentRun", result: AgentResult | None, error: str = "") -> None:
        super().__init__()
        self.run = run
        self.result = result
        self.error = error


def tools_markdown(registry: Registry, workspace: Path) -> str:
    rows = [f"| `{tool.name}` | {tool.risk} | {' '.join(tool.description.split())} |" for tool in registry]
    return "\n".join(
        [
            "# Agent tools",
            "",
            f"Workspace: `{workspace}`. File tools stay inside it; risky tools ask before they run.",
            "",
            "| tool | risk | does |",
            "| --- | --- | --- |",
            *rows,
            "",
            "`/agent` turns agent mode on or off; Esc stops a run.",
        ]
    )


class AgentTools:
    """What agent mode keeps for the life of the chat screen: tools, workspace, approvals."""

    def __init__(self, workspace: str | Path | None = None) -> None:
        self.registry = Registry(builtin_tools())
        self.workspace = Workspace(workspace)
        # One Approvals for the screen: "allow for this session" lasts until the app closes.
        self.approvals = Approvals(ask=self.ask)
        self.run: AgentRun | None = None

    def ask(self, request: ApprovalNeeded) -> str:
        """On the agent thread: show the approval card and wait for the user's answer."""
        run = self.run
        pending = Pending(request)
        with run.lock:
            if run.cancelled:
                return DENY
            run.questions.append(pending)  # so that cancel() can answer it even if the screen never shows it
        run.screen.post_message(AgentAsk(run.log, pending))
        return pending.wait()


class AgentRun:
    """One task in agent mode: its AgentLog (mounted in the conversation) and its Agent."""

    def __init__(self, screen, engine, tools: AgentTools, model_info, config: AgentConfig) -> None:
        self.screen = screen
        self.tools = tools
        self.log = AgentLog(classes="agent-run")
        self.cancelled = False
        self.questions: list[Pending] = []  # approvals asked in this run
        self.lock = threading.Lock()  # `cancelled` and `questions` are shared with the worker
        self.agent = Agent(
            engine,
            tools.registry,
            ToolContext(tools.workspace),
            tools.approvals,
            config,
            template_supports_tools(model_info.path) if model_info is not None else False,
            on_event=lambda event: screen.post_message(AgentEvent(self.log, event)),
        )

    def start(self, task: str, history: list[dict]) -> None:
        self.tools.run = self
        self.screen.run_worker(
            lambda: self._work(task, history), thread=True, group="agent", exit_on_error=False
        )

    def _work(self, task: str, history: list[dict]) -> None:
        try:
            result = self.agent.run(task, history)
        except Exception as exc:  # bad history or a bug: the screen must still leave the busy state
            self.screen.post_message(AgentFinished(self, None, f"{type(exc).__name__}: {exc}"))
        else:
            self.screen.post_message(AgentFinished(self, result))

    def cancel(self) -> None:
        """From the UI thread: stop the generation and any shell command, deny open approvals."""
        with self.lock:
            self.cancelled = True
            questions = list(self.questions)
        self.agent.cancel()
        self.log.deny_pending()
        for pending in questions:  # also answers a question still on its way to the screen
            pending.resolve(DENY)  # an answered one is done with: its worker has moved on or is stopping
