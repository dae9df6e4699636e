"""`squish tools` (what the agent can call) and `squish undo` (revert the agent's file changes)."""

import json
import sys

from .parser import UsageError, tools_parser, undo_parser


def tool_rows(tools) -> list[dict]:
    return [
        {
            "name": tool.name,
            "source": tool.source,
            "risk": tool.risk,
            "description": tool.description,
            "arguments": list(tool.parameters.get("properties", {})),
        }
        for tool in tools
    ]


def tools(argv: list[str]) -> int:
    from ..agent.tools import builtin_tools, load_tools_file
    from .agent import mcp_servers, stop_on_sigterm

    args = tools_parser().parse_args(argv)
    found = builtin_tools()
    if args.tools is not None:
        try:
            found += load_tools_file(args.tools)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    servers = mcp_servers(args.mcp)
    failures = []
    if servers is not None:
        stop_on_sigterm()
        try:
            servers.start()
            found += servers.tools()
            failures = servers.failures()
        finally:
            servers.close()
    rows = tool_rows(found)
    if args.json:
        print(json.dumps({"tools": rows, "failed_servers": [{"server": s, "problem": p} for s, p in failures]}))
        return 0
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        source = row["source"].replace("mcp:", "MCP server ").replace("file:", "")
        print(f"{row['name']:<{width}}  {row['risk']:<5}  {source:<20}  {row['description']}")
    return 0


def undo(argv: list[str]) -> int:
    from ..agent.undo import UndoLog
    from ..models.store import squish_home

    args = undo_parser().parse_args(argv)
    if args.count < 1:
        raise UsageError("the number of runs to undo must be at least 1")
    try:
        log = UndoLog(squish_home() / "undo", args.workspace or ".")
    except OSError as exc:
        raise UsageError(str(exc)) from None
    if not log.workspace.is_dir():
        raise UsageError(f"workspace {log.workspace} is not a directory")
    if args.list:
        runs = log.pending()
        if args.json:
            print(json.dumps({"runs": [{k: r[k] for k in ("id", "task", "started", "files")} for r in runs]}))
        elif not runs:
            print(f"nothing to undo in {log.workspace}", file=sys.stderr)
        for index, run in enumerate(runs, 1):
            files = ", ".join(entry["path"] for entry in run["files"])
            print(f"{index}. {run['started'][:19]}  {run['task']!r}: {files}")
        return 0
    result = log.undo(args.count, force=args.force, dry_run=args.dry_run)
    if args.json:
        print(
            json.dumps(
                {
                    "done": result.done,
                    "runs": [r["task"] for r in result.runs],
                    "reverted": [{"path": r.path, "deleted": r.deleted, "diff": r.diff} for r in result.reverted],
                    "conflicts": result.conflicts,
                }
            )
        )
    elif result.runs:
        sys.stdout.write(result.diff())
    if not result.runs:
        print(f"squish: nothing to undo in {log.workspace}", file=sys.stderr)
        return 1
    if result.conflicts and not args.force:
        print(
            f"squish: not reverted: {', '.join(result.conflicts)} changed since the agent's change; "
            "look at the diff, then run again with --force to overwrite",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        what = "would revert" if args.dry_run else "reverted"
        tasks = "; ".join(repr(r["task"]) for r in result.runs)
        print(f"squish: {what} {len(result.reverted)} file(s) of {len(result.runs)} run(s): {tasks}", file=sys.stderr)
    return 0
