"""A real MCP server for the tests, on the official SDK: `python mcp_server.py stdio|http PORT`.

Tools: echo, add and current_time (read-only), note (writes a line to $MCP_NOTES: not read-only), fail
(an is_error result), slow (sleeps), crash (the process exits mid-call), spawn (starts a
child process that sleeps, to check that stopping the server stops its children too).
It writes its pid to $MCP_PID_FILE when set, and lists its tools only after $MCP_LIST_DELAY
seconds when set (a server slow to start).
"""

import os
import subprocess
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("squish-test")
READ_ONLY = ToolAnnotations(read_only_hint=True)


@server.tool(annotations=READ_ONLY)
def echo(text: str) -> str:
    """Repeat the text back."""
    return text


@server.tool(annotations=READ_ONLY)
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool(annotations=READ_ONLY)
def current_time(city: str) -> str:
    """The current local time in a city."""
    return f"It is 09:30 in {city}."


@server.tool()
def note(text: str) -> str:
    """Write a line to the notes file."""
    with open(os.environ["MCP_NOTES"], "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return "noted"


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "awake"


@server.tool()
def crash() -> str:
    """The server process exits in the middle of the call."""
    os._exit(3)


@server.tool()
def spawn() -> str:
    """Start a child process that outlives this call."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["MCP_CHILD_PID_FILE"], "w") as handle:
        handle.write(str(child.pid))
    return f"child {child.pid}"


if __name__ == "__main__":
    if os.environ.get("MCP_PID_FILE"):
        with open(os.environ["MCP_PID_FILE"], "w") as handle:
            handle.write(str(os.getpid()))
    if os.environ.get("MCP_LIST_DELAY"):
        time.sleep(float(os.environ["MCP_LIST_DELAY"]))
    if sys.argv[1] == "stdio":
        server.run()
    else:
        server.settings.log_level = "WARNING"
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
