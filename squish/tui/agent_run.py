"""Agent mode in the chat app: runs the agent loop off the UI loop and shows its steps as cards.

The loop (`squish.agent.loop.Agent`) runs in a Textual thread worker; it talks to the Engine
only through its own requests (the engine thread makes every MLX call). The worker never
touches widgets: it posts `AgentEvent` for every loop event and `AgentFinished` at the end,
and the chat screen applies them on the UI loop. Approvals of risky tools are the one place
the worker waits for the user: `ask` posts `AgentAsk` with a `Pending` and blocks on it; the
approval card's buttons (or Esc, which denies) resolve it from the UI thread.

MCP servers ($SQUISH_HOME/mcp.json) start on a worker thread the first time agent mode or
/tools needs them and stop when the chat screen goes away; their tools join the registry.
Every run's file changes are recorded for `/undo` (and `squish undo`).
"""

import threading
from pathlib import Path

from textual.message import Message

from ..agent.approval import DENY, Approvals, Pending
from ..agent.events import ApprovalNeeded, Transcript
from ..agent.loop import Agent, AgentConfig, AgentResult
from ..agent.prompt import template_supports_tools
from ..agent.sandbox import Workspace
from ..agent.tools import Registry, ToolContext, builtin_tools
from ..agent.undo import UndoLog, UndoResult
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


def source_words(source: str) -> str:
    return source.replace("mcp:", "MCP server ").replace("file:", "")


def tools_markdown(registry: Registry, workspace: Path, problems: list[str] = ()) -> str:
    rows = [
        f"| `{tool.name}` | {tool.risk} | {source_words(tool.source)} | {' '.join(tool.description.split())} |"
        for tool in registry
    ]
    return "\n".join(
        [
            "# Agent tools",
            "",
            f"Workspace: `{workspace}`. File tools stay inside it; risky tools ask before they run.",
            "",
            "| tool | risk | from | does |",
            "| --- | --- | --- | --- |",
            *rows,
            *(["", *[f"- {problem}" for problem in problems]] if problems else []),
            "",
            "`/agent` turns agent mode on or off; Esc stops a run; `/undo` reverts the last run's file changes.",
        ]
    )


def undo_markdown(result: UndoResult, force_hint: bool) -> str:
    if not result.runs:
        return "# Undo\n\nNothing to undo in this folder."
    tasks = "; ".join(f"*{r['task']}*" for r in result.runs)
    if result.conflicts and not result.done:
        head = (
            f"Not reverted: {', '.join(f'`{p}`' for p in result.conflicts)} changed since the agent's change."
            + (" Look at the diff; `/undo force` reverts anyway." if force_hint else "")
        )
    else:
        head = f"Reverted {len(result.reverted)} file(s) of {len(result.runs)} run(s): {tasks}"
    return f"# Undo\n\n{head}\n\n```diff\n{result.diff()}```"


class AgentTools:
    """What agent mode keeps for the life of the chat screen: tools, workspace, approvals."""

    def __init__(self, workspace: str | Path | None = None, home: Path | None = None) -> None:
        from ..models.store import squish_home

        self.registry = Registry(builtin_tools())
        self.workspace = Workspace(workspace)
        self.undo = UndoLog(squish_home(home) / "undo", self.workspace.root)
        # One Approvals for the screen: "allow for this session" lasts until the app closes.
        self.approvals = Approvals(ask=self.ask)
        self.run: AgentRun | None = None
        self.home = home
        self.mcp = None  # squish.agent.mcp.McpServers once connected
        self.problems: list[str] = []  # MCP servers that failed, one line each
        self._connect_lock = threading.Lock()

    def connect(self) -> list[str]:
        """Start the configured MCP servers once and add their tools (blocks: call on a worker)."""
        from ..agent.mcp import McpServers, configured_servers
        from ..models.store import squish_home

        with self._connect_lock:
            if self.mcp is not None:
                return self.problems
            try:
                configs = configured_servers(squish_home(self.home))
            except ValueError as exc:
                self.problems.append(str(exc))
                configs = []
            self.mcp = McpServers(configs, log_dir=squish_home(self.home) / "logs", on_problem=self.problems.append)
            self.mcp.start()
            tools = [t for t in self.mcp.tools() if self.registry.get(t.name) is None]
            self.registry = Registry(list(self.registry) + tools)
            return self.problems

    def close(self) -> None:
        """Stop the MCP servers (the chat screen is going away)."""
        with self._connect_lock:
            if self.mcp is not None:
                self.mcp.close()

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
        self.engine = engine
        self.model_info = model_info
        self.config = config
        self.agent: Agent | None = None

    def start(self, task: str, history: list[dict]) -> None:
        self.tools.run = self
        self.screen.run_worker(
            lambda: self._work(task, history), thread=True, group="agent", exit_on_error=False
        )

    def _work(self, task: str, history: list[dict]) -> None:
        try:
            self.tools.connect()  # MCP servers, the first time (their tools are then in the registry)
            with self.lock:
                if self.cancelled:  # Esc while the MCP servers were starting
                    self.screen.post_message(
                        AgentFinished(self, AgentResult("", "cancelled", "stopped by the user", Transcript(), 0))
                    )
                    return
                info = self.model_info
                self.agent = Agent(
                    self.engine,
                    self.tools.registry,
                    ToolContext(self.tools.workspace),
                    self.tools.approvals,
                    self.config,
                    template_supports_tools(info.path) if info is not None else False,
                    on_event=lambda event: self.screen.post_message(AgentEvent(self.log, event)),
                    undo=self.tools.undo,
                    call_format=(info.tool_format if info is not None else None) or "json_tools",
                )
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
            agent = self.agent
        if agent is not None:
            agent.cancel()
        self.log.deny_pending()
        for pending in questions:  # also answers a question still on its way to the screen
            pending.resolve(DENY)  # an answered one is done with: its worker has moved on or is stopping
