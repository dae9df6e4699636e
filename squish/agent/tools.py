"""The tool registry, the built-in tools, and `--tools FILE` loading.

A tool is a name, a description, a JSON Schema (draft 2020-12) for its arguments, a risk
level and a handler. Risky tools change the machine (write, edit, shell) and need approval.
Tools loaded from a file have no handler: squish can propose calls to them (`--no-exec`)
but cannot run them.
"""

import difflib
import json
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .sandbox import Call, ToolError, Workspace, cap

SAFE = "safe"
RISKY = "risky"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_LIST = 200
MAX_MATCHES = 50
MAX_FILE_BYTES = 2_000_000
MAX_SCAN = 5000  # files search_files looks at


@dataclass
class ToolContext:
    workspace: Workspace
    shell_timeout_s: float = 30.0
    output_cap: int = 4000  # characters of a result the model gets back
    # The call being run: the agent loop gives each call its own (sandbox.Call) and stops it on
    # a timeout or a cancel, so a handler still running can no longer change anything.
    call: Call = field(default_factory=Call)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    risk: str = SAFE
    handler: Callable[[dict, ToolContext], str] | None = None
    preview: Callable[[dict, ToolContext], str] | None = None  # what an approval prompt shows
    # Introduces a result in plain words ("The file notes.txt says:"), which small models follow.
    label: Callable[[dict], str] | None = None
    # The files a call will change, for undo (write_file, edit_file); None: nothing undoable.
    changes: Callable[[dict, "ToolContext"], list[Path]] | None = None
    source: str = "built-in"  # "built-in", "file:<path>" (--tools) or "mcp:<server>"
    validator: Draft202012Validator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if self.risk not in (SAFE, RISKY):
            raise ValueError(f"tool {self.name}: risk must be {SAFE!r} or {RISKY!r}")
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            raise ValueError(f"tool {self.name}: parameters is not a valid JSON Schema: {exc.message}") from None
        if self.parameters.get("type") != "object":
            raise ValueError(f'tool {self.name}: parameters must be a schema with "type": "object"')
        self.validator = Draft202012Validator(self.parameters)

    def errors(self, arguments) -> list[str]:
        """Every way `arguments` breaks the schema, each naming where ("at 'path': ...")."""
        found = []
        for error in sorted(self.validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path)
            found.append(f"at '{where}': {error.message}" if where else error.message)
        return found

    def openai(self) -> dict:
        """The OpenAI-style function schema, as chat templates' `tools=` expect it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Registry:
    def __init__(self, tools: list[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is defined twice")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def read_json(path: Path, what: str):
    """A JSON file's value; ValueError naming `what` and the file when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None


def load_tools_file(path: str | Path) -> list[Tool]:
    """OpenAI-style function schemas: [{"type": "function", "function": {name, description, parameters}}]."""
    path = Path(path)
    data = read_json(path, "tools file")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise ValueError(f"tools file {path} must hold a non-empty list of function schemas")
    tools = []
    for index, entry in enumerate(data):
        where = f"tools file {path}, entry {index}"
        if not isinstance(entry, dict) or entry.get("type", "function") != "function":
            raise ValueError(f'{where}: expected {{"type": "function", "function": {{...}}}}')
        function = entry.get("function", entry)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}: the function needs a name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise ValueError(f"{where}: parameters must be a JSON object")
        try:
            tools.append(
                Tool(function["name"], str(function.get("description", "")), parameters, source=f"file:{path}")
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tools


# The built-in tools. Each handler raises ToolError for a failure the model should see.


def list_dir(args: dict, ctx: ToolContext) -> str:
    real = ctx.workspace.resolve(args.get("path") or ".")
    if not real.is_dir():
        raise ToolError(f"{args.get('path')!r} is not a directory")
    entries = sorted(real.iterdir(), key=lambda p: p.name)
    lines = [p.name + ("/" if p.is_dir() else "") for p in entries[:MAX_LIST]]
    if len(entries) > MAX_LIST:
        lines.append(f"[... {len(entries) - MAX_LIST} more entries]")
    return "\n".join(lines) if lines else "(empty directory)"


def read_text(real: Path, shown: str) -> str:
    if not real.is_file():
        raise ToolError(f"{shown!r} is not a file" if real.exists() else f"{shown!r} does not exist")
    if real.stat().st_size > MAX_FILE_BYTES:
        raise ToolError(f"{shown!r} is larger than {MAX_FILE_BYTES // 1_000_000} MB")
    data = real.read_bytes()
    if b"\x00" in data[:8192]:
        raise ToolError(f"{shown!r} is a binary file")
    return data.decode("utf-8", "replace")


def read_file(args: dict, ctx: ToolContext) -> str:
    path = args["path"]
    return read_text(ctx.workspace.resolve(path), path)


def search_files(args: dict, ctx: ToolContext) -> str:
    query = args["query"]
    if not query:
        raise ToolError("the query is empty")
    start = ctx.workspace.resolve(args.get("path") or ".")
    files = [start] if start.is_file() else sorted(islice((p for p in start.rglob("*") if p.is_file()), MAX_SCAN))
    matches, needle = [], query.lower()
    for file in files:
        rel = file.relative_to(ctx.workspace.root)
        hidden = any(part.startswith(".") for part in file.relative_to(start).parts)
        if hidden or not ctx.workspace.contains(file.resolve()):
            continue  # hidden files, and symlinks that lead out of the workspace
        try:
            content = read_text(file, rel.as_posix())
        except (ToolError, OSError):
            continue
        for number, line in enumerate(content.splitlines(), 1):
            if needle in line.lower():
                matches.append(f"{rel.as_posix()}:{number}: {line.strip()[:200]}")
                if len(matches) >= MAX_MATCHES:
                    return "\n".join(matches) + f"\n[stopped at {MAX_MATCHES} matches]"
    return "\n".join(matches) if matches else f"no matches for {query!r}"


def unified_diff(before: str, after: str, name: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def current_text(ctx: ToolContext, path: str) -> str:
    real = ctx.workspace.resolve(path)
    return read_text(real, path) if real.exists() else ""


def write_file(args: dict, ctx: ToolContext) -> str:
    path, content = args["path"], args["content"]
    real = ctx.workspace.resolve(path)
    if real.is_dir():
        raise ToolError(f"{path!r} is a directory")
    ctx.workspace.write_text(real, content, ctx.call)
    return f"wrote {len(content.encode('utf-8'))} bytes to {ctx.workspace.relative(real)}"


def write_preview(args: dict, ctx: ToolContext) -> str:
    return unified_diff(current_text(ctx, args["path"]), args["content"], args["path"])


def edited(args: dict, ctx: ToolContext) -> tuple[Path, str]:
    path, old, new = args["path"], args["old_text"], args["new_text"]
    real = ctx.workspace.resolve(path)
    text = read_text(real, path)
    count = text.count(old) if old else 0
    if count != 1:
        found = "is empty" if not old else ("was not found" if count == 0 else f"occurs {count} times")
        raise ToolError(f"old_text {found} in {path!r}; it must occur exactly once")
    return real, text.replace(old, new, 1)


def edit_file(args: dict, ctx: ToolContext) -> str:
    real, text = edited(args, ctx)
    ctx.workspace.write_text(real, text, ctx.call)
    return f"edited {ctx.workspace.relative(real)}"


def edit_preview(args: dict, ctx: ToolContext) -> str:
    real, text = edited(args, ctx)
    return unified_diff(read_text(real, args["path"]), text, args["path"])


def run_shell(args: dict, ctx: ToolContext) -> str:
    command = args["command"]
    if not command.strip():
        raise ToolError("the command is empty")
    return ctx.workspace.run_shell(command, ctx.shell_timeout_s, ctx.output_cap, ctx.call)


def shell_preview(args: dict, ctx: ToolContext) -> str:
    return (
        f"$ {args['command']}\n(in {ctx.workspace.root}, timeout {ctx.shell_timeout_s:g} s; "
        "what a shell command changes cannot be undone)"
    )


def changed_path(args: dict, ctx: ToolContext) -> list[Path]:
    return [ctx.workspace.resolve(args["path"])]


def string(description: str, max_length: int) -> dict:
    return {"type": "string", "description": description, "maxLength": max_length}


def builtin_tools() -> list[Tool]:
    def schema(required: list[str], **properties) -> dict:
        return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    # Descriptions name what a tool is for in the words people use for it: a small model (and
    # the router, squish.agent.choose) picks the tool from them.
    path = string("path relative to the workspace, '.' for the workspace itself", 260)
    file = string("file path relative to the workspace", 260)
    return [
        Tool(
            "list_dir",
            "List the files and folders in a directory.",
            schema(["path"], path=path),
            handler=list_dir,
            label=lambda a: (
                "This folder contains:" if a["path"] in (".", "./", "") else f"The folder {a['path']} contains:"
            ),
        ),
        Tool(
            "read_file",
            "Read a text file and show its contents.",
            schema(["path"], path=file),
            handler=read_file,
            label=lambda a: f"The file {a['path']} says:",
        ),
        Tool(
            "search_files",
            "Search the files under a path for lines that mention some text.",
            schema(["query"], query=string("text to find", 200), path=path),
            handler=search_files,
            label=lambda a: f"Lines containing {a['query']!r}:",
        ),
        Tool(
            "write_file",
            "Create, write or save a text file with the given content.",
            schema(["path", "content"], path=file, content=string("the whole new content", 100_000)),
            RISKY,
            write_file,
            write_preview,
            changes=changed_path,
        ),
        Tool(
            "edit_file",
            "Edit a file: replace or change one exact piece of its text.",
            schema(
                ["path", "old_text", "new_text"],
                path=file,
                old_text=string("text to replace", 20_000),
                new_text=string("replacement", 20_000),
            ),
            RISKY,
            edit_file,
            edit_preview,
            changes=changed_path,
        ),
        Tool(
            "run_shell",
            "Run a shell command in the workspace.",
            schema(["command"], command=string("the command line", 2000)),
            RISKY,
            run_shell,
            shell_preview,
            label=lambda a: f"The command `{a['command']}` printed:",
        ),
    ]


def preview(tool: Tool, arguments: dict, ctx: ToolContext) -> str:
    """The approval preview, or the reason none can be made (the call would fail)."""
    if tool.preview is None:
        return json.dumps(arguments, indent=2, ensure_ascii=False)
    try:
        return cap(tool.preview(arguments, ctx), 20_000)
    except ToolError as exc:
        return f"(no preview: {exc})"
