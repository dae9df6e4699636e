"""The workspace sandbox and the built-in tools, on real temp folders."""

import json
import os
import time

import pytest

from squish.agent.sandbox import Call, ToolError, Workspace
from squish.agent.tools import Registry, Tool, ToolContext, builtin_tools, load_tools_file, preview


@pytest.fixture
def ctx(workspace):
    return ToolContext(Workspace(workspace), shell_timeout_s=5.0, output_cap=4000)


@pytest.fixture
def tools():
    return Registry(builtin_tools())


def run(tools, ctx, name, **arguments):
    tool = tools.get(name)
    assert tool.errors(arguments) == []
    return tool.handler(arguments, ctx)


@pytest.mark.parametrize("path", ["..", "../x", "src/../../x", "src/../notes.txt"])
def test_dot_dot_is_refused(ctx, path):
    with pytest.raises(ToolError, match="'..' is not allowed"):
        ctx.workspace.resolve(path)


def test_absolute_path_outside_is_refused(ctx, tmp_path):
    (tmp_path / "secret.txt").write_text("s")
    with pytest.raises(ToolError, match="outside the workspace"):
        ctx.workspace.resolve(str(tmp_path / "secret.txt"))
    with pytest.raises(ToolError, match="outside the workspace"):
        ctx.workspace.resolve("/etc/passwd")


def test_absolute_path_inside_is_allowed(ctx, workspace):
    assert ctx.workspace.resolve(str(workspace / "notes.txt")) == (workspace / "notes.txt").resolve()


def test_symlink_escapes_are_refused(ctx, workspace, tmp_path, tools):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    os.symlink(outside / "secret.txt", workspace / "link.txt")
    os.symlink(outside, workspace / "linkdir")
    for path in ("link.txt", "linkdir", "linkdir/secret.txt", "linkdir/new.txt"):
        with pytest.raises(ToolError, match="leads through a symlink outside the workspace"):
            ctx.workspace.resolve(path)
    with pytest.raises(ToolError):
        run(tools, ctx, "read_file", path="link.txt")
    with pytest.raises(ToolError):
        run(tools, ctx, "write_file", path="linkdir/new.txt", content="x")
    assert not (outside / "new.txt").exists()
    # search_files skips the escaping link instead of reading through it
    assert run(tools, ctx, "search_files", query="top secret") == "no matches for 'top secret'"


def test_symlink_inside_is_allowed(ctx, workspace, tools):
    os.symlink(workspace / "notes.txt", workspace / "alias.txt")
    assert run(tools, ctx, "read_file", path="alias.txt") == "buy milk\n"


def test_shell_timeout_is_enforced(ctx):
    with pytest.raises(ToolError, match="timed out after 0.5 s") as caught:
        ctx.workspace.run_shell("echo started; sleep 10", 0.5, 1000, Call())
    assert "started" in str(caught.value)  # the output so far comes back with the error


def test_shell_runs_in_the_workspace_without_stdin(ctx, tools, workspace):
    assert run(tools, ctx, "run_shell", command="pwd") == f"exit code 0\n{workspace.resolve()}\n"
    started = time.perf_counter()
    assert run(tools, ctx, "run_shell", command="cat") == "exit code 0\n"  # stdin is closed, cat ends at once
    assert time.perf_counter() - started < 3
    assert run(tools, ctx, "run_shell", command="exit 3").startswith("exit code 3")


def test_shell_output_is_capped(ctx, tools):
    ctx.output_cap = 100
    out = run(tools, ctx, "run_shell", command="yes | head -c 5000")
    assert "more characters cut" in out and len(out) < 200


def wait_for(path, what: str, timeout: float = 20.0) -> None:
    """Block until `path` exists (a command started), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_stopping_a_call_kills_its_command_and_the_command_s_children(ctx, workspace):
    import threading

    call, results = Call(), []
    command = "sh -c 'sleep 30' & touch started; wait"  # a child of the shell, in its process group
    worker = threading.Thread(target=lambda: results.append(ctx.workspace.run_shell(command, 60, 100, call)))
    worker.start()
    wait_for(workspace / "started", "the command to start")
    assert call.close() is False  # nothing was committed
    worker.join(10)
    assert not worker.is_alive() and results[0].startswith("exit code -9")


def test_a_stopped_call_starts_no_command_and_makes_no_change(ctx, workspace):
    call = Call()
    call.close()
    with pytest.raises(ToolError, match="before the command started"):
        ctx.workspace.run_shell("touch ran", 5, 100, call)
    with pytest.raises(ToolError, match="before its change was made"):
        ctx.workspace.write_text(workspace / "notes.txt", "changed\n", call)
    assert not (workspace / "ran").exists()
    assert (workspace / "notes.txt").read_text() == "buy milk\n"
    assert sorted(p.name for p in workspace.iterdir()) == ["README.md", "notes.txt", "src"]  # no temp file left


def test_a_write_replaces_the_file_whole_and_keeps_its_mode(ctx, workspace):
    path = workspace / "notes.txt"
    path.chmod(0o640)
    call = Call()
    ctx.workspace.write_text(path, "bread\n", call)
    assert path.read_text() == "bread\n" and (path.stat().st_mode & 0o777) == 0o640 and call.committed
    ctx.workspace.write_text(workspace / "new" / "deep" / "a.txt", "x", call)  # folders are made at the rename
    assert (workspace / "new" / "deep" / "a.txt").read_text() == "x"


def test_list_read_search(ctx, tools):
    assert run(tools, ctx, "list_dir", path=".") == "README.md\nnotes.txt\nsrc/"
    assert run(tools, ctx, "read_file", path="src/main.py") == "print('hello')\n"
    assert run(tools, ctx, "search_files", query="HELLO") == "README.md:2: hello world\nsrc/main.py:1: print('hello')"
    assert run(tools, ctx, "search_files", query="zebra") == "no matches for 'zebra'"


def test_read_file_failures_are_messages(ctx, tools, workspace):
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02")
    for path, message in (("missing.txt", "does not exist"), ("src", "is not a file"), ("blob.bin", "binary")):
        with pytest.raises(ToolError, match=message):
            run(tools, ctx, "read_file", path=path)


def test_write_and_edit_with_diff_previews(ctx, tools, workspace):
    write = tools.get("write_file")
    assert "+new file\n" in preview(write, {"path": "new/a.txt", "content": "new file\n"}, ctx)
    assert run(tools, ctx, "write_file", path="new/a.txt", content="new file\n") == "wrote 9 bytes to new/a.txt"
    edit = tools.get("edit_file")
    args = {"path": "new/a.txt", "old_text": "new", "new_text": "old"}
    assert "-new file\n+old file\n" in preview(edit, args, ctx)
    assert run(tools, ctx, "edit_file", **args) == "edited new/a.txt"
    assert (workspace / "new/a.txt").read_text() == "old file\n"
    with pytest.raises(ToolError, match="was not found"):
        run(tools, ctx, "edit_file", **args)
    (workspace / "twice.txt").write_text("a a")
    with pytest.raises(ToolError, match="occurs 2 times"):
        run(tools, ctx, "edit_file", path="twice.txt", old_text="a", new_text="b")
    assert preview(edit, {"path": "missing.txt", "old_text": "a", "new_text": "b"}, ctx).startswith("(no preview:")


def test_builtin_schemas_and_risk(tools):
    risky = {t.name for t in tools if t.risk == "risky"}
    assert risky == {"write_file", "edit_file", "run_shell"}
    assert tools.get("list_dir").errors({"path": ".", "extra": 1}) == [
        "Additional properties are not allowed ('extra' was unexpected)"
    ]


def test_load_tools_file(tmp_path):
    path = tmp_path / "weather.json"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    path.write_text(
        json.dumps(
            [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": schema}}]
        )
    )
    (tool,) = load_tools_file(path)
    assert (tool.name, tool.handler, tool.risk) == ("get_weather", None, "safe")
    assert tool.errors({}) == ["'city' is a required property"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty list"),
        ('[{"type": "retrieval"}]', "expected"),
        ('[{"type": "function", "function": {"description": "x"}}]', "needs a name"),
        ('[{"type": "function", "function": {"name": "bad name"}}]', "must be 1-64"),
        ('[{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]', "not a valid JSON Schema"),
        ('[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]', '"type": "object"'),
    ],
)
def test_bad_tools_files_are_refused(tmp_path, content, message):
    path = tmp_path / "tools.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_tools_file(path)


def test_missing_tools_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tools_file(tmp_path / "nope.json")


def test_duplicate_tool_names_are_refused():
    tool = Tool("x", "", {"type": "object"})
    with pytest.raises(ValueError, match="defined twice"):
        Registry([tool, tool])
