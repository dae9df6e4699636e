"""`squish --agent -p TASK` and `squish -p ... --tools FILE --no-exec`: the agent from the command line.

Steps go to stderr as readable lines, the answer to stdout. `--json` prints one object with
"text" and "steps" (and "tool_calls" with --no-exec). Risky tools run only with `--yes`: there
is no one to ask on the command line, so without it they are refused and the model is told.
"""

import json
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
        if isinstance(event, CallProposed):
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
    for flag, value in (("--yes", args.yes), ("--workspace", args.workspace), ("--max-steps", args.max_steps)):
        if value not in (None, False) and not args.agent:
            raise UsageError(f"{flag} needs --agent")
    if args.agent and args.system:
        raise UsageError("--system cannot be used with --agent: the agent's system prompt is squish's own")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")


def run_agent(args) -> int:
    """The CLI's agent mode (`args` from squish.cli.parser.main_parser)."""
    check_flags(args)
    task = read_prompt(args.prompt)
    if not task.strip():
        raise UsageError("empty prompt")

    from ..agent.loop import Agent, AgentConfig
    from ..agent.prompt import template_supports_tools
    from ..agent.sandbox import Workspace
    from ..agent.tools import Registry, ToolContext, builtin_tools, load_tools_file

    tools = builtin_tools() if args.agent else []
    if args.tools is not None:
        try:
            tools += load_tools_file(args.tools)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        registry = Registry(tools)
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

    from ..engine.engine import Engine
    from ..engine.events import Error, Loaded
    from ..models import store

    engine = Engine()
    info = None
    for event in store.load(engine, args.model):
        if isinstance(event, Error):
            return fail(event.message, event.exit_code)
        if isinstance(event, Loaded):
            info = event.info
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
    )
    if printer is not None:
        mode = "the model's chat template" if template_tools else "squish's tool prompt"
        print(
            f"squish agent: {info.name}, {len(registry)} tools through {mode}, workspace {workspace.root}",
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
    code = EXIT.get(result.reason, 2)
    if code == 130:
        print("squish: stopped", file=sys.stderr)
    elif code and (args.quiet or args.json):
        print(f"squish: agent stopped ({result.reason}): {result.message}", file=sys.stderr)
    return code
