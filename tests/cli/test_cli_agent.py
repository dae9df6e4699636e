"""`squish --agent` and `--tools ... --no-exec` flags: usage errors in subprocesses (no model load),
and the step printer on scripted events."""

import io
import subprocess
import sys

import pytest

from squish.agent.events import (
    Answer,
    ApprovalGiven,
    ApprovalNeeded,
    CallProposed,
    Retrying,
    Stopped,
    ToolCall,
    ToolFinished,
    Validated,
)
from squish.cli.agent import StepPrinter


def squish(*args):
    return subprocess.run(
        [sys.executable, "-c", "import sys, squish.cli as c; sys.exit(c.main())", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent"], "agent mode needs -p PROMPT"),
        (["-p", "x", "--no-exec"], "--no-exec needs --tools FILE"),
        (["-p", "x", "--tools", "t.json"], "--tools needs --agent"),
        (["-p", "x", "--yes"], "--yes needs --agent"),
        (["-p", "x", "--workspace", "."], "--workspace needs --agent"),
        (["-p", "x", "--agent", "--max-steps", "0"], "--max-steps must be at least 1"),
        (["-p", "x", "--agent", "--system", "be evil"], "--system cannot be used with --agent"),
        (["-p", "x", "--agent", "--workspace", "/no/such/dir"], "is not a directory"),
        (["-p", "x", "--no-exec", "--tools", "/no/such.json"], "does not exist"),
        (["-p", " ", "--agent"], "empty prompt"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(args, message):
    result = squish(*args)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"squish: error: {result.stderr.strip()[len('squish: error: ') :]}"]
    assert message in result.stderr


def test_bad_tools_file_is_a_usage_error(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text('[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]')
    result = squish("-p", "x", "--no-exec", "--tools", str(path))
    assert result.returncode == 1 and '"type": "object"' in result.stderr


def test_help_lists_agent_flags_without_importing_mlx():
    code = (
        "import sys, squish.cli as c\n"
        "try:\n c.main(['--help'])\nexcept SystemExit: pass\n"
        "print('mlx' in sys.modules, 'textual' in sys.modules, 'llguidance' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    for flag in ("--agent", "--tools FILE", "--no-exec", "--yes", "--max-steps", "--workspace DIR"):
        assert flag in result.stdout
    assert result.stdout.strip().endswith("False False False")


def test_step_printer_lines():
    out = io.StringIO()
    printer = StepPrinter(out)
    call = ToolCall("s1c1", "run_shell", {"command": "ls"})
    for event in (
        CallProposed(1, ToolCall("s1c1", "read_file", {"path": 3})),
        Validated(1, "s1c1", False, ("read_file arguments at 'path': 3 is not of type 'string'",)),
        Retrying(1, 1, "read_file arguments at 'path': 3 is not of type 'string'", 0.6, 5),
        CallProposed(1, call),
        Validated(1, "s1c1", True),
        ApprovalNeeded(1, call, "$ ls\n(in /w, timeout 30 s)"),
        ApprovalGiven(1, "s1c1", "deny", "policy"),
        ToolFinished(1, "s1c1", "run_shell", False, "the user denied this run_shell call", 0.4),
        Answer(2, "done"),
        Stopped("max_steps", "stopped after 8 steps"),
    ):
        printer(event)
    assert out.getvalue().splitlines() == [
        '[step 1] call read_file {"path": 3}',
        "[step 1]   invalid: read_file arguments at 'path': 3 is not of type 'string'",
        "[step 1] retry 1 (temperature 0.6): read_file arguments at 'path': 3 is not of type 'string'",
        '[step 1] call run_shell {"command": "ls"}',
        "[step 1]   valid",
        "[step 1]   needs approval: $ ls (in /w, timeout 30 s)",
        "[step 1]   denied: risky tools run only with --yes",
        "[step 1]   run_shell error in 0 ms, 1 line(s): the user denied this run_shell call",
        "[step 2] answer",
        "squish: agent stopped (max_steps): stopped after 8 steps",
    ]
