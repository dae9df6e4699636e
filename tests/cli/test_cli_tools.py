"""`squish tools`, `squish undo` and `--mcp` in subprocesses: real MCP servers, no orphans on
Ctrl+C (SIGINT) or SIGTERM, and undo records made by an agent run in another process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import gone, read_pid

from squish.agent.undo import UndoLog

SERVER = str(Path(__file__).parents[1] / "agent" / "mcp_server.py")


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "SQUISH_HOME": str(home), "PYTHONIOENCODING": "utf-8"}


def squish(env, *args, timeout=90):
    return subprocess.run(
        [sys.executable, "-m", "squish", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def mcp_config(path: Path, **servers) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def stdio_server(**env) -> dict:
    return {"command": sys.executable, "args": [SERVER, "stdio"], "env": {k: str(v) for k, v in env.items()}}


# squish tools


def test_tools_lists_builtin_file_and_mcp_tools(env, tmp_path):
    tools_file = tmp_path / "weather.json"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools_file.write_text(json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]))
    pid_file = tmp_path / "pid"
    config = mcp_config(tmp_path / "mcp.json", t=stdio_server(MCP_PID_FILE=pid_file), bad={"command": "/no/such"})
    result = squish(env, "tools", "--tools", str(tools_file), "--mcp", str(config), "--json")
    assert result.returncode == 0, result.stderr
    listed = {row["name"]: row for row in json.loads(result.stdout)["tools"]}
    assert listed["read_file"]["source"] == "built-in"
    assert listed["get_weather"]["source"] == f"file:{tools_file}"
    assert (listed["t__echo"]["source"], listed["t__echo"]["risk"]) == ("mcp:t", "safe")
    assert listed["t__note"]["risk"] == "risky"
    assert [f["server"] for f in json.loads(result.stdout)["failed_servers"]] == ["bad"]
    assert result.stderr.count("MCP server bad failed to start") == 1
    assert gone(int(pid_file.read_text()))
    plain = squish(env, "tools", "--mcp", str(config))
    assert "t__echo" in plain.stdout and "MCP server t" in plain.stdout


def test_home_mcp_json_is_read(env, tmp_path):
    mcp_config(Path(env["SQUISH_HOME"]) / "mcp.json", home=stdio_server())
    result = squish(env, "tools", "--json")
    assert "home__echo" in {row["name"] for row in json.loads(result.stdout)["tools"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["tools", "--mcp", "/no/such.json"], "does not exist"),
        (["-p", "x", "--mcp", "m.json"], "--mcp needs --agent"),
        (["undo", "0"], "at least 1"),
        (["undo", "--workspace", "/no/such/dir"], "is not a directory"),
    ],
)
def test_usage_errors(env, args, message):
    result = squish(env, *args)
    assert result.returncode == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["tools", "agent"])
def test_stopping_squish_stops_its_mcp_servers(env, tmp_path, tiny_model, how, command):
    """Ctrl+C or SIGTERM while a server is starting: squish exits and no server process is left."""
    pid_file, child_file = tmp_path / "pid", tmp_path / "child"
    slow = stdio_server(MCP_PID_FILE=pid_file, MCP_LIST_DELAY=60)
    config = mcp_config(tmp_path / "mcp.json", slow=slow)
    args = ["tools", "--mcp", str(config)]
    if command == "agent":
        args = ["--agent", "--mcp", str(config), "--model", str(tiny_model), "-p", "hi"]
    process = subprocess.Popen(
        [sys.executable, "-m", "squish", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        server = read_pid(pid_file)
        time.sleep(0.3)
        process.send_signal(how)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert gone(server), "the MCP server outlived squish"
    assert not child_file.exists()


# squish undo


def record(env, workspace: Path, task: str, path: str, text: str) -> None:
    """What an agent run in another process leaves: a change recorded, then made."""
    log = UndoLog(Path(env["SQUISH_HOME"]) / "undo", workspace)
    recorder = log.begin(task)
    recorder.before(workspace / path)
    (workspace / path).write_text(text)
    recorder.after(workspace / path)


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("buy milk\n")
    return root


def test_undo_reverts_the_last_run_and_prints_the_diff(env, workspace):
    record(env, workspace, "first", "notes.txt", "buy bread\n")
    record(env, workspace, "second", "new.txt", "hello\n")
    listed = squish(env, "undo", "--list", "--workspace", str(workspace))
    assert listed.returncode == 0 and "'second': new.txt" in listed.stdout and "'first': notes.txt" in listed.stdout
    dry = squish(env, "undo", "--dry-run", "--workspace", str(workspace))
    assert dry.returncode == 0 and "-hello" in dry.stdout and (workspace / "new.txt").exists()
    result = squish(env, "undo", "--workspace", str(workspace))
    assert result.returncode == 0, result.stderr
    assert "-hello" in result.stdout and "reverted 1 file(s) of 1 run(s): 'second'" in result.stderr
    assert not (workspace / "new.txt").exists() and (workspace / "notes.txt").read_text() == "buy bread\n"
    again = squish(env, "undo", "--json", "--workspace", str(workspace))
    payload = json.loads(again.stdout)
    assert payload["done"] and payload["runs"] == ["first"] and payload["reverted"][0]["path"] == "notes.txt"
    assert (workspace / "notes.txt").read_text() == "buy milk\n"
    nothing = squish(env, "undo", "--workspace", str(workspace))
    assert nothing.returncode == 1 and "nothing to undo" in nothing.stderr


def test_undo_refuses_a_file_changed_since_unless_forced(env, workspace):
    record(env, workspace, "agent", "notes.txt", "buy bread\n")
    (workspace / "notes.txt").write_text("the user's own edit\n")
    result = squish(env, "undo", "--workspace", str(workspace))
    assert result.returncode == 1 and "notes.txt changed since" in result.stderr and "--force" in result.stderr
    assert (workspace / "notes.txt").read_text() == "the user's own edit\n"
    forced = squish(env, "undo", "--force", "--workspace", str(workspace))
    assert forced.returncode == 0 and (workspace / "notes.txt").read_text() == "buy milk\n"
