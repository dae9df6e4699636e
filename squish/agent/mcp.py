"""MCP servers as agent tools, on the official `mcp` SDK.

Servers come from the common config format, `{"mcpServers": {name: {...}}}`, read from
`$SQUISH_HOME/mcp.json` and `--mcp FILE`. A server is either a command (stdio transport:
`command`, `args`, `env`, `cwd`) or a `url` (streamable HTTP, with optional `headers`).
squish's own keys: `allow` (true, or a list of tool names that run without approval),
`timeout` (seconds a call may take, default 30) and `disabled`.

Each server's tools join the registry as `<server>__<tool>` with the server's input schema
(validated and constrained like any tool). They are risky (approval needed) unless the
server marks the tool read-only or the config allows it. An `is_error` result reaches the
model as an error.

The SDK is asyncio-based; squish's agent is threads. `McpServers` runs one event loop on
its own thread (an anyio blocking portal) that holds every connection; the agent's tool
thread submits a call there and waits for it (with the call's timeout, and abandoning it
when the run is cancelled). A server that fails to start or dies is reported in one line
and the others go on. `close()` stops every server process (the SDK closes its stdin, then
terminates its process group): call it on exit, also after Ctrl+C.
"""

import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import CancelledError, Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import ToolError
from .tools import RISKY, SAFE, Tool, read_json

log = logging.getLogger("squish.agent.mcp")

CONFIG_NAME = "mcp.json"
SEPARATOR = "__"
CONNECT_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 30.0
MAX_RESULT_CHARS = 100_000  # the loop caps what the model sees much lower (ToolContext.output_cap)
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class ServerConfig:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict | None = None
    allow: bool | frozenset = False  # True: every tool runs without approval; else these tool names
    timeout_s: float = CALL_TIMEOUT_S
    source: str = ""  # the config file it came from

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def allows(self, tool: str) -> bool:
        return self.allow is True or (isinstance(self.allow, frozenset) and tool in self.allow)


def _strings(value, where: str, what: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{where}: {what} must be an object of strings")


def parse_server(name: str, entry, where: str) -> ServerConfig | None:
    """One server entry; None when it is disabled. ValueError names the file, server and problem."""
    where = f"{where}, server {name!r}"
    if not SERVER_NAME.match(name):
        raise ValueError(f"{where}: a server name must be 1-32 letters, digits, '_' or '-'")
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with \"command\" or \"url\"")
    if entry.get("disabled") is True:
        return None
    command, url = entry.get("command"), entry.get("url")
    if (command is None) == (url is None):
        raise ValueError(f'{where}: give either "command" (a program to start) or "url" (streamable HTTP)')
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise ValueError(f'{where}: "command" must be a non-empty string')
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ValueError(f'{where}: "url" must be an http:// or https:// address')
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f'{where}: "args" must be a list of strings')
    env, headers = entry.get("env"), entry.get("headers")
    if env is not None:
        _strings(env, where, '"env"')
    if headers is not None:
        _strings(headers, where, '"headers"')
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError(f'{where}: "cwd" must be a string')
    allow = entry.get("allow", False)
    if isinstance(allow, list) and all(isinstance(a, str) for a in allow):
        allow = frozenset(allow)
    elif not isinstance(allow, bool):
        raise ValueError(f'{where}: "allow" must be true, false or a list of tool names')
    timeout = entry.get("timeout", CALL_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f'{where}: "timeout" must be a positive number of seconds')
    return ServerConfig(
        name, command, tuple(args), env, cwd, url, headers, allow, float(timeout), source=where.split(",")[0]
    )


def read_config(path: str | Path) -> list[ServerConfig]:
    """The servers of one config file. ValueError (with the file named) for anything malformed."""
    path = Path(path)
    data = read_json(path, "MCP config")
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ValueError(f'MCP config {path}: expected {{"mcpServers": {{name: {{...}}}}}}')
    parsed = (parse_server(name, entry, f"MCP config {path}") for name, entry in servers.items())
    return [server for server in parsed if server is not None]


def configured_servers(home: Path | None, extra: str | Path | None = None) -> list[ServerConfig]:
    """`$SQUISH_HOME/mcp.json` (when present), then `--mcp FILE`; a later entry replaces a same-named one."""
    found: dict[str, ServerConfig] = {}
    if home is not None and (Path(home) / CONFIG_NAME).is_file():
        found.update((s.name, s) for s in read_config(Path(home) / CONFIG_NAME))
    if extra is not None:
        found.update((s.name, s) for s in read_config(extra))
    return list(found.values())


def tool_name(server: str, tool: str) -> str:
    return f"{server}{SEPARATOR}{re.sub(r'[^A-Za-z0-9_-]', '_', tool)}"


def result_text(result) -> str:
    """The text of a CallToolResult's content blocks (non-text blocks as a short placeholder)."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if text is not None else f"[resource {resource.uri}, {resource.mime_type or 'binary'}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[... {len(text) - MAX_RESULT_CHARS} more characters cut]"
    return text


def session_leaders() -> set[int]:
    """This process's children that lead a session of their own (how the SDK starts servers)."""
    import psutil

    leaders = set()
    for child in psutil.Process().children():
        try:
            if os.getsid(child.pid) == child.pid:
                leaders.add(child.pid)
        except OSError:
            pass
    return leaders


def end_groups(groups: set[int], grace_s: float = 2.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after the grace time."""
    alive = set()
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
            alive.add(group)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        for group in list(alive):
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                alive.discard(group)
    for group in alive:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def one_line(exc: BaseException) -> str:
    """The innermost message of an exception (task groups wrap them in ExceptionGroups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


@dataclass
class Server:
    config: ServerConfig
    state: str = "starting"  # starting, running, failed, stopped
    problem: str = ""
    tools: list = field(default_factory=list)  # mcp Tool objects as listed
    client: object = None
    ready: threading.Event = field(default_factory=threading.Event)


class McpServers:
    """Connections to MCP servers, held by one event loop on a background thread."""

    def __init__(self, configs: list[ServerConfig], log_dir: Path | None = None, on_problem=None):
        self.servers = {c.name: Server(c) for c in configs}
        self.log_dir = log_dir
        self.on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._portal_cm = None
        self._portal = None
        self._stop = None
        self._main: Future | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._groups: set[int] = set()
        self._before: set[int] = set()

    # Lifecycle (any thread but the loop's).

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> "McpServers":
        """Connect to every server at once; returns when each is running or has failed.

        May run on a thread of its own while the model loads; `close()` from another thread
        (Ctrl+C) stops what has started, even midway.
        """
        import anyio
        from anyio.from_thread import start_blocking_portal

        with self._lock:
            if not self.servers or self._closed or self._portal is not None:
                return self
            # The SDK starts each stdio server in a session of its own (its pid is the group's
            # id). A server that exits when its stdin closes is not killed by the SDK, and
            # children it started would outlive it: close() ends these groups too.
            self._before = session_leaders()
            self._portal_cm = start_blocking_portal(name="squish-mcp")
            self._portal = self._portal_cm.__enter__()
            self._stop = self._portal.call(anyio.Event)
            self._main = self._portal.start_task_soon(self._serve_all, timeout_s)
        deadline = time.monotonic() + timeout_s + 5
        for server in self.servers.values():
            server.ready.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if not self._closed:
                self._groups = session_leaders() - self._before
        for server in self.servers.values():
            if server.state == "starting" and not self._closed:  # the loop did not answer at all
                self._fail(server, f"did not start within {timeout_s:g} s")
        return self

    def close(self, timeout_s: float = 15.0) -> None:
        """Stop every server (processes terminated, HTTP sessions ended) and the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._portal is None:
                return
            groups = self._groups or (session_leaders() - self._before)
        try:
            if any(s.state == "starting" for s in self.servers.values()):
                self._main.cancel()  # connecting servers are stopped by the SDK's own shutdown
            else:
                self._portal.call(self._stop.set)
                self._main.result(timeout_s)
        except (FutureTimeout, CancelledError, RuntimeError) as exc:
            if not self._main.cancelled():
                log.warning("MCP servers did not stop cleanly: %s", one_line(exc))
            self._main.cancel()
        except Exception as exc:  # a server's shutdown failing must not keep squish from exiting
            log.warning("MCP servers did not stop cleanly: %s", one_line(exc))
        finally:
            try:
                self._portal_cm.__exit__(None, None, None)
            except Exception as exc:
                log.warning("MCP event loop did not stop cleanly: %s", one_line(exc))
            end_groups(groups)

    def __enter__(self) -> "McpServers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # What the agent sees.

    def failures(self) -> list[tuple[str, str]]:
        return [(s.config.name, s.problem) for s in self.servers.values() if s.state == "failed"]

    def tools(self) -> list[Tool]:
        """Every running server's tools, namespaced by server, as registry tools."""
        made = []
        for server in self.servers.values():
            if server.state != "running":
                continue
            for listed in server.tools:
                tool = self._tool(server, listed)
                if tool is not None:
                    made.append(tool)
        return made

    def _tool(self, server: Server, listed) -> Tool | None:
        config = server.config
        name = tool_name(config.name, listed.name)
        annotations = listed.annotations
        read_only = bool(annotations is not None and annotations.read_only_hint)
        risk = SAFE if read_only or config.allows(listed.name) else RISKY
        description = " ".join((listed.description or listed.title or "").split())
        schema = listed.input_schema or {"type": "object", "properties": {}}

        def handler(arguments: dict, context, _server=config.name, _tool=listed.name) -> str:
            # The loop closes the call at its timeout or on a cancel: stop waiting then.
            call = getattr(context, "call", None)
            return self.call(_server, _tool, arguments, (lambda: call.closed) if call is not None else None)

        def preview(arguments: dict, context, _server=config.name, _tool=listed.name) -> str:
            shown = json.dumps(arguments, indent=2, ensure_ascii=False)
            return f"MCP server {_server}, tool {_tool} (what it changes cannot be undone):\n{shown}"

        try:
            return Tool(name, description, schema, risk, handler, preview, source=f"mcp:{config.name}")
        except ValueError as exc:
            self.on_problem(f"MCP server {config.name}: tool {listed.name!r} left out: {exc}")
            return None

    def call(self, server_name: str, tool: str, arguments: dict, stopped=None) -> str:
        """Run one tool call; the text result, or ToolError (is_error, timeout, dead server).
        `stopped()` true means the agent gave up on the call (cancelled): it is abandoned."""
        server = self.servers[server_name]
        if server.state != "running" or self._closed:
            raise ToolError(f"the MCP server {server_name} is not running ({server.problem or server.state})")
        timeout = server.config.timeout_s
        try:
            future = self._portal.start_task_soon(self._call, server, tool, arguments, timeout)
        except RuntimeError:
            raise ToolError(f"the MCP server {server_name} is not running (squish is stopping)") from None
        deadline = time.monotonic() + timeout + 5
        while True:
            if stopped is not None and stopped():
                future.cancel()
                raise ToolError("cancelled by the user")
            try:
                ok, text = future.result(0.1)
                break
            except FutureTimeout:
                if time.monotonic() > deadline:
                    future.cancel()
                    raise ToolError(f"{tool} on MCP server {server_name} timed out after {timeout:g} s") from None
            except CancelledError:
                raise ToolError("cancelled") from None
        if not ok:
            raise ToolError(text)
        return text

    # The event loop's side.

    async def _serve_all(self, timeout_s: float) -> None:
        import anyio

        async with anyio.create_task_group() as group:
            for server in self.servers.values():
                group.start_soon(self._serve, server, timeout_s)

    async def _serve(self, server: Server, timeout_s: float) -> None:
        import anyio

        config = server.config
        errlog = self._errlog(config)
        connected = anyio.Event()

        async def deadline(scope) -> None:
            # Cancels the connecting task's scope from outside: a scope must not be left while
            # the client's own task groups, entered inside it, are still open.
            with anyio.move_on_after(timeout_s):
                await connected.wait()
            if not connected.is_set():
                server.problem = f"did not start within {timeout_s:g} s"
                scope.cancel()

        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as watch:
                    watch.start_soon(deadline, scope)
                    async with self._client(config, errlog) as client:
                        server.tools = await self._list_tools(client)
                        server.client = client
                        server.state = "running"
                        connected.set()
                        server.ready.set()
                        await self._stop.wait()
            if server.state == "starting":
                self._fail(server, server.problem or "did not start")
        except Exception as exc:
            if server.state == "running" and self._closed:
                log.debug("MCP server %s: %s while stopping", config.name, one_line(exc))
            elif server.state == "running":
                server.state = "failed"
                server.problem = one_line(exc)
                self.on_problem(f"MCP server {config.name} stopped: {server.problem}")
            else:
                self._fail(server, one_line(exc))
        finally:
            if server.state == "running":
                server.state = "stopped"
            server.client = None
            server.ready.set()
            if errlog not in (None, subprocess.DEVNULL):
                errlog.close()

    def _client(self, config: ServerConfig, errlog):
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp_types import Implementation

        from squish import __version__

        if config.command:
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=config.env, cwd=config.cwd
            )
            transport = stdio_client(params, errlog=errlog)
        else:
            transport = self._http(config)
        return Client(
            transport,
            client_info=Implementation(name="squish", version=__version__),
            read_timeout_seconds=config.timeout_s,
            cache=None,
        )

    @staticmethod
    def _http(config: ServerConfig):
        from contextlib import asynccontextmanager

        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        @asynccontextmanager
        async def transport():
            timeout = httpx2.Timeout(30.0, read=max(300.0, config.timeout_s))
            async with httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http:
                async with streamable_http_client(config.url, http_client=http) as streams:
                    yield streams

        return transport()

    def _errlog(self, config: ServerConfig):
        """Where a stdio server's stderr goes: a log file (the chat app's screen must stay clean)."""
        if not config.command or self.log_dir is None:
            return subprocess.DEVNULL
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            return open(self.log_dir / f"mcp-{config.name}.log", "a", encoding="utf-8")
        except OSError:
            return subprocess.DEVNULL

    @staticmethod
    async def _list_tools(client) -> list:
        tools, cursor = [], None
        for _ in range(100):  # a server whose pages never end cannot hang the start
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def _call(self, server: Server, tool: str, arguments: dict, timeout: float) -> tuple[bool, str]:
        import anyio

        client = server.client
        if client is None:
            return False, f"the MCP server {server.config.name} is not running"
        try:
            with anyio.fail_after(timeout):
                result = await client.call_tool(tool, arguments)
        except TimeoutError:
            return False, f"{tool} on MCP server {server.config.name} timed out after {timeout:g} s"
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            return False, self._died(server, exc)
        except Exception as exc:
            problem = one_line(exc)
            if "closed" in problem.lower():
                return False, self._died(server, exc)
            return False, f"{tool} on MCP server {server.config.name} failed: {problem}"
        return not result.is_error, result_text(result) or ("(error)" if result.is_error else "(no output)")

    def _died(self, server: Server, exc: BaseException) -> str:
        if server.state == "running":
            server.state = "failed"
            server.problem = f"the connection closed ({one_line(exc)})"
            self.on_problem(f"MCP server {server.config.name} stopped: {server.problem}")
        return f"the MCP server {server.config.name} stopped: {server.problem}"

    def _fail(self, server: Server, problem: str) -> None:
        if server.state in ("failed", "stopped"):
            return
        server.state, server.problem = "failed", problem
        self.on_problem(f"MCP server {server.config.name} failed to start: {problem}")
        server.ready.set()

