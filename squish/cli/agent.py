"""`squish --agent -p TASK` and `squish -p ... --tools FILE --no-exec`: the agent from the command line.

Steps go to stderr as readable lines, the answer to stdout. `--json` prints one object with
"text" and "steps" (and "tool_calls" with --no-exec). Risky tools run only with `--yes`: there
is no one to ask on the command line, so without it they are refused and the model is told.

MCP servers (`$SQUISH_HOME/mcp.json`, `--mcp FILE`) start while the model loads and are all
stopped when the command ends, also on Ctrl+C or SIGTERM. File changes are recorded for
`squish undo`.
"""

import json
import signal
import sys
import threading

from ..agent.approval import Approvals
from ..agent.events import (
    Answer,
    ApprovalGiven,
    ApprovalNeeded,
    CallProposed,
    Notice,
    Retrying,
    Stopped,
    ToolChosen,
    ToolFinished,
    Validated,
)
from .chat import read_prompt
from .parser import UsageError, fail

EXIT = {"answer": 0, "proposed": 0, "cancelled": 130}  # every other stop reason: 2


def one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class StepPrinter:
    """Readable step lines on stderr, as the events arrive."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def line(self, step: int, text: str) -> None:
        prefix = f"[step {step}] " if step else ""
        print(f"{prefix}{text}", file=self.stream, flush=True)

    def __call__(self, event) -> None:
        if isinstance(event, ToolChosen):
            ranked = ", ".join(f"{name} {score:.1f}" for name, score in event.ranking[:4])
            self.line(event.step, f"chose {event.name or 'no tool'} ({event.mode}: {ranked})")
        elif isinstance(event, CallProposed):
            arguments = json.dumps(event.call.arguments, ensure_ascii=False)
            self.line(event.step, f"call {event.call.name} {one_line(arguments, 200)}")
        elif isinstance(event, Validated):
            self.line(event.step, "  valid" if event.ok else f"  invalid: {'; '.join(event.errors)}")
        elif isinstance(event, Retrying):
            self.line(event.step, f"retry {event.attempt} (temperature {event.temperature:g}): {event.reason}")
        elif isinstance(event, ApprovalNeeded):
            self.line(event.step, f"  needs approval: {one_line(event.preview, 200)}")
        elif isinstance(event, ApprovalGiven):
            if event.source == "policy":
                self.line(event.step, "  denied: risky tools run only with --yes")
            else:
                self.line(event.step, f"  {event.decision.replace('_', ' ')} ({event.source})")
        elif isinstance(event, ToolFinished):
            status = "ok" if event.ok else "error"
            lines = event.output.count("\n") + 1 if event.output else 0
            self.line(
                event.step,
                f"  {event.name} {status} in {event.elapsed_ms:.0f} ms, {lines} line(s): {one_line(event.output)}",
            )
        elif isinstance(event, Notice):
            self.line(event.step, f"note: {event.text}")
        elif isinstance(event, Answer):
            self.line(event.step, "answer")
        elif isinstance(event, Stopped) and event.reason not in ("answer", "proposed"):
            print(f"squish: agent stopped ({event.reason}): {event.message}", file=self.stream, flush=True)


def check_flags(args) -> None:
    if args.tools is None and args.no_exec and not args.agent:
        raise UsageError("--no-exec needs --tools FILE (or --agent for the built-in tools)")
    if args.tools is not None and not (args.agent or args.no_exec):
        raise UsageError("--tools needs --agent (run the tools) or --no-exec (only propose calls)")
    flags = (("--yes", args.yes), ("--workspace", args.workspace), ("--max-steps", args.max_steps), ("--mcp", args.mcp))
    for flag, value in flags:
        if value not in (None, False) and not args.agent:
            raise UsageError(f"{flag} needs --agent")
    if args.agent and args.system:
        raise UsageError("--system cannot be used with --agent: the agent's system prompt is squish's own")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")


def problem_line(text: str) -> None:
    print(f"squish: {text}", file=sys.stderr, flush=True)


def mcp_servers(mcp_file):
    """The configured MCP servers (not started yet), or None when there are none."""
    from ..agent.mcp import McpServers, configured_servers
    from ..models.store import squish_home

    try:
        configs = configured_servers(squish_home(), mcp_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not configs:
        return None
    return McpServers(configs, log_dir=squish_home() / "logs", on_problem=problem_line)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl+C, so MCP server processes are stopped on the way out."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_agent(args) -> int:
    """The CLI's agent mode (`args` from squish.cli.parser.main_parser)."""
    check_flags(args)
    task = read_prompt(args.prompt)
    if not task.strip():
        raise UsageError("empty prompt")
    servers = mcp_servers(args.mcp) if args.agent else None
    if servers is None:
        return agent_session(args, task, None)
    stop_on_sigterm()
    starting = threading.Thread(target=servers.start, name="squish-mcp-start", daemon=True)
    starting.start()
    try:
        return agent_session(args, task, (servers, starting))
    finally:
        servers.close()


def agent_session(args, task: str, mcp) -> int:
    """One agent run; `mcp` is (McpServers, the thread starting them) or None."""
    from ..agent.loop import AgentConfig
    from ..agent.sandbox import Workspace
    from ..agent.tools import builtin_tools, load_tools_file
    from ..engine.engine import Engine

    tools = builtin_tools() if args.agent else []
    if args.tools is not None:
        try:
            tools += load_tools_file(args.tools)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        workspace = Workspace(args.workspace)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    config = AgentConfig(
        max_steps=args.max_steps or AgentConfig.max_steps,
        temperature=args.temp,
        top_p=args.top_p,
        seed=args.seed,
        execute=not args.no_exec,
        request_timeout_s=args.timeout,
        answer_tokens=args.max_tokens,
    )
    engine = Engine()
    try:
        return run_on(engine, args, task, mcp, tools, workspace, config)
    finally:
        # Ctrl+C while the model loads or the agent works: wait for the engine thread to stop
        # what it runs, since a process that exits during an MLX call aborts.
        engine.shutdown(timeout=10)


def run_on(engine, args, task: str, mcp, tools: list, workspace, config) -> int:
    """Load the model, add the MCP servers' tools, run the agent and print what it did."""
    from ..agent.loop import Agent
    from ..agent.prompt import template_supports_tools
    from ..agent.tools import Registry, ToolContext
    from ..agent.undo import UndoLog
    from ..engine.events import Error, Loaded
    from ..models import store
    from ..models.store import squish_home

    info = None
    for event in store.load(engine, args.model):
        if isinstance(event, Error):
            return fail(event.message, event.exit_code)
        if isinstance(event, Loaded):
            info = event.info
    servers = []
    if mcp is not None:
        mcp[1].join()  # the servers started while the model loaded
        found = mcp[0].tools()
        servers = sorted({t.source.split(":", 1)[1] for t in found})
        tools += found
    try:
        registry = Registry(tools)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    template_tools = template_supports_tools(info.path)
    printer = None if (args.quiet or args.json) else StepPrinter()
    agent = Agent(
        engine,
        registry,
        ToolContext(workspace, shell_timeout_s=min(args.timeout, 30.0)),
        Approvals(allow_all=args.yes),
        config,
        template_tools,
        on_event=printer,
        undo=UndoLog(squish_home() / "undo", workspace.root) if not args.no_exec else None,
        call_format=info.tool_format or "json_tools",
    )
    if printer is not None:
        mode = "the model's chat template" if template_tools else "squish's tool prompt"
        extra = f" ({sum(t.source.startswith('mcp:') for t in tools)} from MCP: {', '.join(servers)})" if servers else ""
        print(
            f"squish agent: {info.name}, {len(registry)} tools{extra} through {mode}, workspace {workspace.root}",
            file=sys.stderr,
        )

    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(agent.run(task)), name="squish-agent", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        agent.cancel()
        worker.join(10)
    if not outcome:
        return fail("the agent did not finish", 2)
    result = outcome[0]
    if args.json:
        payload = dict(result.public(), model=info.name)
        if args.no_exec:
            payload = {"tool_calls": result.tool_calls, **payload}
        print(json.dumps(payload, ensure_ascii=False))
    elif args.no_exec:
        for call in result.tool_calls:
            print(json.dumps(call, ensure_ascii=False))
    elif result.text:
        print(result.text)
    if result.changed_files and not args.quiet and not args.json:
        print(f"squish: changed {', '.join(result.changed_files)} (revert with: squish undo)", file=sys.stderr)
    code = EXIT.get(result.reason, 2)
    if code == 130:
        print("squish: stopped", file=sys.stderr)
    elif code and (args.quiet or args.json):
        print(f"squish: agent stopped ({result.reason}): {result.message}", file=sys.stderr)
    return code
