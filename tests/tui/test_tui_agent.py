"""Agent mode in the chat app, driven with Textual's Pilot.

The structural tests use the deterministic scripted model of tests/helpers.py (agent loop
branches and card layout). The real model's agent run is tested through the CLI
(tests/agent/test_agent_model.py), which keeps the suite under its 10-minute budget.
"""

import json
import sys
import time
from pathlib import Path

import pytest
from helpers import HANG, NO_CALL, ScriptedEngine, call, submit_line

from squish.agent.tools import builtin_tools
from squish.tui.app import SquishApp
from squish.tui.screens.info import InfoScreen
from squish.tui.widgets.agent_cards import ApprovalPrompt, ResultView, StepCard
from squish.tui.widgets.message import ChatMessage

SIZE = (110, 40)


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("# Demo\nhello world\n")
    (root / "notes.txt").write_text("buy milk\n")
    return root


@pytest.fixture
def agent_app(tmp_path, workspace, history):
    """agent_app(reply, reply, ...) -> a SquishApp on a scripted model, working in `workspace`."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    home = tmp_path / "home"  # undo records and mcp.json live here, not in the user's own home
    home.mkdir()

    def make(*replies, mcp=None):
        if mcp is not None:
            (home / "mcp.json").write_text(json.dumps({"mcpServers": mcp}))
        engine = ScriptedEngine(*replies, model_path=model_dir)
        return SquishApp(engine, history, max_tokens=64, workspace=workspace, home=home)

    return make


async def asked(pilot, wait_until, task: str):
    """Agent mode on, `task` sent, and its first approval prompt waiting for an answer."""
    screen = await agent_ready(pilot, wait_until)
    await submit_line(pilot, task)
    await wait_until(
        pilot, lambda: any(p.pending is not None for p in screen.query(ApprovalPrompt)), timeout=20, what="approval"
    )
    return screen


async def agent_ready(pilot, wait_until):
    screen = pilot.app.chat_screen
    await wait_until(pilot, lambda: screen.model_info is not None, timeout=10, what="the model")
    await submit_line(pilot, "/agent")
    assert screen.agent_mode
    return screen


async def test_agent_command_toggles_agent_mode(agent_app, wait_until):
    app = agent_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        assert not screen.agent_mode
        await agent_ready(pilot, wait_until)
        assert "Agent mode" in str(screen.prompt.placeholder)
        assert "agent" in str(screen.model_bar.render())
        await submit_line(pilot, "/agent")
        assert not screen.agent_mode
        assert "Agent mode" not in str(screen.prompt.placeholder)
        assert "agent" not in str(screen.model_bar.render())
        palette = {command.title for command in app.get_system_commands(screen)}
        assert {"/agent", "/tools"} <= palette
        await submit_line(pilot, "/help")
        help_text = app.screen.markdown
        assert "`/agent`" in help_text and "`/tools`" in help_text


async def test_tools_lists_the_builtin_tools(agent_app, workspace):
    app = agent_app()
    async with app.run_test(size=SIZE) as pilot:
        await submit_line(pilot, "/tools")
        assert isinstance(app.screen, InfoScreen)
        text = app.screen.markdown
        for tool in builtin_tools():
            assert f"| `{tool.name}` | {tool.risk} |" in text
        assert str(workspace.resolve()) in text


async def test_a_task_shows_a_step_card_and_the_answer(agent_app, wait_until):
    app = agent_app(call("list_dir", path="."), NO_CALL, "The folder holds README.md and notes.txt.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await agent_ready(pilot, wait_until)
        await submit_line(pilot, "Which files are in this folder?")
        await wait_until(pilot, lambda: not screen.busy, timeout=20, what="the agent run")
        cards = list(screen.query(StepCard))
        assert cards, "no step card"
        first = cards[0]
        assert first.calls and next(iter(first.calls.values())).tool_name == "list_dir"
        assert "arguments match the schema" in str(first.query_one(".validation").render())
        result = first.query_one(ResultView)
        assert result.output.splitlines() == ["README.md", "notes.txt"]
        assert "list_dir" in result.title and "ms" in result.title
        answer = list(screen.query(ChatMessage))[-1]
        assert answer.role == "assistant" and answer.text == "The folder holds README.md and notes.txt."
        assert "step" in str(answer.query_one(".footer").render())
        stored = app.history.messages(screen.chat.id)
        assert [(m.role, m.content) for m in stored][-1] == ("assistant", answer.text)
        assert screen.context[-2:] == [
            {"role": "user", "content": "Which files are in this folder?"},
            {"role": "assistant", "content": answer.text},
        ]


async def test_a_retry_shows_its_reason(agent_app, wait_until):
    app = agent_app(call("read_file", path=7), call("read_file", path="notes.txt"), NO_CALL, "It says buy milk.")
    async with app.run_test(size=SIZE) as pilot:
        screen = await agent_ready(pilot, wait_until)
        await submit_line(pilot, "What does notes.txt say?")
        await wait_until(pilot, lambda: not screen.busy, timeout=20, what="the agent run")
        retry = str(screen.query_one(StepCard).query_one(".retry").render())
        assert "retry 1" in retry and "7 is not of type 'string'" in retry


async def risky_run(app, pilot, wait_until, key: str):
    screen = await agent_ready(pilot, wait_until)
    await submit_line(pilot, "Create a.txt that says hi")
    await wait_until(
        pilot,
        lambda: any(p.pending is not None for p in screen.query(ApprovalPrompt)),
        timeout=20,
        what="the approval prompt",
    )
    prompt = screen.query_one(ApprovalPrompt)
    assert "a.txt" in prompt.request.preview and "+hi" in prompt.request.preview
    assert app.focused is prompt
    await pilot.press(key)
    await wait_until(pilot, lambda: not screen.busy, timeout=20, what="the agent run")
    return screen, prompt


async def test_denied_risky_tool_does_not_run_and_the_model_is_told(agent_app, workspace, wait_until):
    app = agent_app(call("write_file", path="a.txt", content="hi"), NO_CALL, "I did not write it.")
    async with app.run_test(size=SIZE) as pilot:
        screen, prompt = await risky_run(app, pilot, wait_until, "d")
        assert prompt.decision == "deny"
        assert not (workspace / "a.txt").exists()
        result = screen.query_one(ResultView)
        assert "denied" in result.output
        told = [m["content"] for r in app.engine.requests for m in r.messages]
        assert any("the user denied this write_file call" in text for text in told)
        assert screen.focused is screen.prompt


async def test_allowed_risky_tool_runs(agent_app, workspace, wait_until):
    app = agent_app(call("write_file", path="a.txt", content="hi"), NO_CALL, "Done.")
    async with app.run_test(size=SIZE) as pilot:
        screen, prompt = await risky_run(app, pilot, wait_until, "a")
        assert prompt.decision == "allow_once"
        assert (workspace / "a.txt").read_text() == "hi"
        assert list(screen.query(ChatMessage))[-1].text == "Done."


async def test_escape_aborts_the_run(agent_app, wait_until, notifications):
    app = agent_app(HANG)
    async with app.run_test(size=SIZE) as pilot:
        screen = await agent_ready(pilot, wait_until)
        await submit_line(pilot, "List the files")
        await wait_until(pilot, lambda: screen.query(StepCard), timeout=10, what="the first step")
        assert screen.busy
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy, timeout=10, what="the run to stop")
        stopped = str(screen.query_one(".stopped").render())
        assert stopped.startswith("■ cancelled")
        assert "agent stopped" in notifications(app)
        assert app.engine.requests[0].messages[-1]["content"] == "List the files"


async def test_escape_while_asking_denies_and_stops(agent_app, workspace, wait_until):
    app = agent_app(call("run_shell", command="touch x"), NO_CALL, "ok")
    async with app.run_test(size=SIZE) as pilot:
        screen = await asked(pilot, wait_until, "Touch x")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy, timeout=10, what="the run to stop")
        assert screen.query_one(ApprovalPrompt).decision == "deny"
        assert not (workspace / "x").exists()


async def test_chat_mode_is_untouched_by_agent_mode(agent_app, wait_until):
    app = agent_app("Hello there.")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_until(pilot, lambda: screen.model_info is not None, timeout=10, what="the model")
        await submit_line(pilot, "/agent")
        await submit_line(pilot, "/agent")
        await submit_line(pilot, "Hi")
        await wait_until(pilot, lambda: not screen.busy and screen.last_answer, timeout=10, what="the answer")
        assert screen.last_answer == "Hello there."
        assert not screen.query(StepCard)


async def allowed_edit(pilot, wait_until):
    screen = await asked(pilot, wait_until, "Replace milk with bread in notes.txt")
    await pilot.press("a")
    await wait_until(pilot, lambda: not screen.busy, timeout=20, what="the agent run")
    return screen


async def test_undo_reverts_the_last_runs_edit_and_shows_the_diff(agent_app, workspace, wait_until):
    app = agent_app(call("edit_file", path="notes.txt", old_text="milk", new_text="bread"), NO_CALL, "Done.")
    async with app.run_test(size=SIZE) as pilot:
        await allowed_edit(pilot, wait_until)
        assert (workspace / "notes.txt").read_text() == "buy bread\n"
        await submit_line(pilot, "/undo")
        assert isinstance(app.screen, InfoScreen)
        assert "-buy bread" in app.screen.markdown and "+buy milk" in app.screen.markdown
        assert (workspace / "notes.txt").read_text() == "buy milk\n"
        await pilot.press("escape")
        await submit_line(pilot, "/undo")
        assert "Nothing to undo" in app.screen.markdown


async def test_undo_leaves_a_file_changed_since_and_says_how_to_force(agent_app, workspace, wait_until):
    app = agent_app(call("edit_file", path="notes.txt", old_text="milk", new_text="bread"), NO_CALL, "Done.")
    async with app.run_test(size=SIZE) as pilot:
        await allowed_edit(pilot, wait_until)
        (workspace / "notes.txt").write_text("my own words\n")
        await submit_line(pilot, "/undo")
        assert "changed since" in app.screen.markdown and "/undo force" in app.screen.markdown
        assert (workspace / "notes.txt").read_text() == "my own words\n"
        await pilot.press("escape")
        await submit_line(pilot, "/undo force")
        assert (workspace / "notes.txt").read_text() == "buy milk\n"


MCP_SERVER = str(Path(__file__).parents[1] / "agent" / "mcp_server.py")


async def test_mcp_tools_are_listed_called_and_their_server_stops_with_the_app(agent_app, tmp_path, wait_until):
    import psutil

    pid_file = tmp_path / "mcp.pid"
    server = {"command": sys.executable, "args": [MCP_SERVER, "stdio"], "env": {"MCP_PID_FILE": str(pid_file)}}
    app = agent_app(call("t__echo", text="hello from mcp"), NO_CALL, "It echoed.", mcp={"t": server})
    async with app.run_test(size=SIZE) as pilot:
        screen = await agent_ready(pilot, wait_until)
        await submit_line(pilot, "/tools")
        await wait_until(pilot, lambda: isinstance(app.screen, InfoScreen), timeout=30, what="the tools list")
        assert "`t__echo`" in app.screen.markdown and "MCP server t" in app.screen.markdown
        await pilot.press("escape")
        await submit_line(pilot, "echo something")
        await wait_until(pilot, lambda: not screen.busy, timeout=30, what="the agent run")
        (result,) = screen.query(ResultView)
        assert result.output == "hello from mcp"
        pid = int(pid_file.read_text())
        assert psutil.pid_exists(pid)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the MCP server outlived the app"
        time.sleep(0.05)
