"""MCP servers as tools: config parsing, real servers over stdio and streamable HTTP, failures, no orphans."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import gone, read_pid

from squish.agent.mcp import McpServers, ServerConfig, configured_servers, read_config
from squish.agent.sandbox import ToolError
from squish.agent.tools import RISKY, SAFE

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def stdio(name="t", tmp_path=None, **extra):
    env = {"MCP_NOTES": str(tmp_path / "notes.txt")} if tmp_path else {}
    env.update(extra.pop("env", {}))
    return ServerConfig(name, command=sys.executable, args=(SERVER, "stdio"), env=env, **extra)


# Config files.


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_config_reads_stdio_and_http_servers(tmp_path):
    path = write(
        tmp_path / "mcp.json",
        {
            "mcpServers": {
                "files": {"command": "npx", "args": ["-y", "server"], "env": {"A": "1"}, "allow": ["read"]},
                "web": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer x"}, "timeout": 5},
                "off": {"command": "x", "disabled": True},
            }
        },
    )
    files, web = read_config(path)
    assert (files.transport, files.args, files.env, files.allows("read"), files.allows("write")) == (
        "stdio",
        ("-y", "server"),
        {"A": "1"},
        True,
        False,
    )
    assert (web.transport, web.headers, web.timeout_s) == ("http", {"Authorization": "Bearer x"}, 5.0)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"servers": {}}, "expected"),
        ({"mcpServers": {"a": {}}}, 'either "command"'),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, 'either "command"'),
        ({"mcpServers": {"a": {"url": "ftp://h"}}}, "http:// or https://"),
        ({"mcpServers": {"a": {"command": "x", "args": "-y"}}}, '"args" must be a list'),
        ({"mcpServers": {"a": {"command": "x", "env": {"A": 1}}}}, '"env" must be an object of strings'),
        ({"mcpServers": {"a": {"command": "x", "timeout": 0}}}, '"timeout" must be a positive'),
        ({"mcpServers": {"a": {"command": "x", "allow": "yes"}}}, '"allow" must be'),
        ({"mcpServers": {"a b": {"command": "x"}}}, "server name"),
    ],
)
def test_config_errors_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path / "bad.json", data)
    with pytest.raises(ValueError, match=message) as error:
        read_config(path)
    assert str(path) in str(error.value)


def test_config_that_is_not_json_or_missing(tmp_path):
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="does not exist"):
        read_config(tmp_path / "missing.json")


def test_home_config_then_the_flag_file_replaces_same_names(tmp_path):
    write(tmp_path / "mcp.json", {"mcpServers": {"a": {"command": "one"}, "b": {"command": "two"}}})
    extra = write(tmp_path / "extra.json", {"mcpServers": {"a": {"url": "http://127.0.0.1:1/mcp"}}})
    servers = {s.name: s for s in configured_servers(tmp_path, extra)}
    assert (servers["a"].transport, servers["b"].command) == ("http", "two")
    assert configured_servers(tmp_path / "nowhere") == []


# A real stdio server.


@pytest.fixture(scope="module")
def stdio_servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcp")
    pid_file = tmp / "pid"
    problems = []
    servers = McpServers(
        [stdio("t", tmp, env={"MCP_PID_FILE": str(pid_file)}, timeout_s=2.0), stdio("trusted", tmp, allow=True)],
        log_dir=tmp / "logs",
        on_problem=problems.append,
    ).start(timeout_s=30)
    servers.tmp, servers.problems, servers.pid = tmp, problems, read_pid(pid_file)
    yield servers
    servers.close()
    assert gone(servers.pid)


def tools_of(servers) -> dict:
    return {tool.name: tool for tool in servers.tools()}


def test_tools_are_namespaced_with_their_schemas_and_risk(stdio_servers):
    tools = tools_of(stdio_servers)
    assert {"t__echo", "t__add", "t__note", "trusted__note"} <= set(tools)
    assert tools["t__add"].parameters["properties"].keys() == {"a", "b"}
    assert tools["t__add"].source == "mcp:t"
    assert tools["t__echo"].risk == SAFE  # the server marks it read-only
    assert tools["t__note"].risk == RISKY  # risky by default
    assert tools["trusted__note"].risk == SAFE  # the config allows every tool of "trusted"
    assert tools["t__add"].errors({"a": 1, "b": "two"}) == ["at 'b': 'two' is not of type 'integer'"]


def test_calls_return_text_and_is_error_becomes_a_tool_error(stdio_servers):
    tools = tools_of(stdio_servers)
    assert tools["t__echo"].handler({"text": "héllo"}, None) == "héllo"
    assert tools["t__add"].handler({"a": 2, "b": 40}, None) == "42"
    tools["t__note"].handler({"text": "remember"}, None)
    assert (stdio_servers.tmp / "notes.txt").read_text() == "remember\n"
    with pytest.raises(ToolError, match="fail"):
        tools["t__fail"].handler({"reason": "because"}, None)


def test_a_call_past_its_timeout_is_an_error_and_the_server_goes_on(stdio_servers):
    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out after 2 s"):
        stdio_servers.call("t", "slow", {"seconds": 30})
    assert time.monotonic() - started < 8
    assert stdio_servers.call("t", "echo", {"text": "still here"}) == "still here"


def test_a_cancelled_call_stops_waiting(stdio_servers):
    import threading

    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(ToolError, match="cancelled"):
        stdio_servers.call("trusted", "slow", {"seconds": 20}, cancelled.is_set)
    assert time.monotonic() - started < 3


def test_server_stderr_goes_to_its_log_file(stdio_servers):
    assert (stdio_servers.tmp / "logs" / "mcp-t.log").exists()


# Failures.


def test_servers_that_fail_to_start_are_one_line_each_and_the_rest_go_on(tmp_path):
    problems = []
    configs = [
        ServerConfig("missing", command=str(tmp_path / "no-such-program")),
        ServerConfig("exits", command=sys.executable, args=("-c", "raise SystemExit(1)")),
        ServerConfig("nohttp", url="http://127.0.0.1:9/mcp"),
        stdio("ok", tmp_path),
    ]
    with McpServers(configs, on_problem=problems.append) as servers:
        assert [t.name for t in servers.tools() if t.name == "ok__echo"] == ["ok__echo"]
        assert {name for name, _ in servers.failures()} == {"missing", "exits", "nohttp"}
    assert len(problems) == 3
    assert all("\n" not in line and "failed to start" in line for line in problems)


def test_a_server_slow_to_start_fails_at_the_connect_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    problems = []
    config = stdio("sleepy", tmp_path, env={"MCP_LIST_DELAY": "30", "MCP_PID_FILE": str(pid_file)})
    started = time.monotonic()
    servers = McpServers([config], on_problem=problems.append).start(timeout_s=1.5)
    try:
        assert time.monotonic() - started < 12
        assert servers.failures() == [("sleepy", "did not start within 1.5 s")]
        assert servers.tools() == []
    finally:
        servers.close()
    assert gone(read_pid(pid_file))


def test_a_server_that_dies_is_reported_once_and_its_tools_answer_not_running(tmp_path):
    problems = []
    with McpServers([stdio("c", tmp_path)], on_problem=problems.append) as servers:
        with pytest.raises(ToolError, match="stopped"):
            servers.call("c", "crash", {})
        with pytest.raises(ToolError, match="not running"):
            servers.call("c", "echo", {"text": "x"})
    assert len(problems) == 1 and "MCP server c stopped" in problems[0]


# No orphans.


def test_close_stops_the_server_and_its_children(tmp_path):
    pid_file, child_file = tmp_path / "pid", tmp_path / "child"
    config = stdio("k", tmp_path, env={"MCP_PID_FILE": str(pid_file), "MCP_CHILD_PID_FILE": str(child_file)})
    servers = McpServers([config]).start()
    servers.call("k", "spawn", {})
    server_pid, child_pid = read_pid(pid_file), read_pid(child_file)
    assert psutil.pid_exists(child_pid)
    servers.close()
    assert gone(server_pid) and gone(child_pid)


# A real streamable HTTP server on 127.0.0.1.


@pytest.fixture
def http_server(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MCP_NOTES": str(tmp_path / "notes.txt")}
    process = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()  # uvicorn waits for a running call: kill it when that takes long
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def test_streamable_http_server_tools_and_calls(http_server):
    config = ServerConfig("web", url=http_server, headers={"X-Squish-Test": "1"}, timeout_s=2.0)
    with McpServers([config]) as servers:
        tools = tools_of(servers)
        assert tools["web__echo"].handler({"text": "over http"}, None) == "over http"
        assert tools["web__add"].risk == SAFE and tools["web__note"].risk == RISKY
        with pytest.raises(ToolError, match="timed out"):
            servers.call("web", "slow", {"seconds": 6})


# In the agent loop (a scripted model, real servers).


def test_the_agent_runs_mcp_tools_and_error_results_reach_the_model(stdio_servers, scripted, tool_call, no_call):
    from squish.agent.events import ApprovalGiven, ToolFinished

    run = scripted(
        tool_call("trusted__fail", reason="x"),
        tool_call("t__note", text="denied note"),
        tool_call("t__echo", text="hi"),
        no_call,
        "The echo said hi.",
        tools=stdio_servers.tools(),
    )
    result = run("echo hi")
    assert result.text == "The echo said hi."
    finished = run.of(ToolFinished)
    assert [(f.name, f.ok) for f in finished] == [("trusted__fail", False), ("t__note", False), ("t__echo", True)]
    assert "denied" in finished[1].output  # risky: no one to ask, so it is refused
    assert [a.source for a in run.of(ApprovalGiven)] == ["policy"]
    second = run.engine.requests[1].messages[-1]["content"]
    assert "error: Error executing tool fail" in second
    notes = stdio_servers.tmp / "notes.txt"
    assert not notes.exists() or "denied note" not in notes.read_text(encoding="utf-8")
