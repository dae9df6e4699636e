"""Undo of the agent's file changes: records, reverts, conflicts, and the agent loop's bookkeeping."""

import pytest

from squish.agent.undo import UndoLog


@pytest.fixture
def log(tmp_path, workspace):
    return UndoLog(tmp_path / "undo", workspace)


def change(log, task, edits):
    """One recorded run: edits is a list of (path, new bytes or None to leave the file alone)."""
    recorder = log.begin(task)
    for rel, data in edits:
        real = log.workspace / rel
        recorder.before(real)
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(data)
        recorder.after(real)
    return recorder


def test_undo_restores_an_edited_file_and_shows_the_diff(log, workspace):
    change(log, "edit notes", [("notes.txt", b"buy bread\n")])
    result = log.undo()
    assert result.done and not result.conflicts
    assert (workspace / "notes.txt").read_text() == "buy milk\n"
    assert "-buy bread" in result.diff() and "+buy milk" in result.diff()
    assert log.pending() == []
    assert log.undo().done is False  # nothing left to undo


def test_undo_deletes_a_created_file_and_the_folders_the_write_made(log, workspace):
    change(log, "create", [("new/deep/file.txt", b"hello\n")])
    (result,) = log.undo().reverted
    assert result.deleted and result.path == "new/deep/file.txt"
    assert not (workspace / "new").exists()


def test_a_created_folder_that_holds_other_files_stays(log, workspace):
    change(log, "create", [("new/file.txt", b"x")])
    (workspace / "new" / "mine.txt").write_text("someone else's")
    log.undo()
    assert (workspace / "new" / "mine.txt").exists() and not (workspace / "new" / "file.txt").exists()


def test_undo_reverts_the_last_run_then_the_one_before(log, workspace):
    change(log, "first", [("notes.txt", b"one\n")])
    change(log, "second", [("notes.txt", b"two\n"), ("README.md", b"changed\n")])
    assert [r["task"] for r in log.pending()] == ["second", "first"]
    log.undo()
    assert (workspace / "notes.txt").read_text() == "one\n"
    assert (workspace / "README.md").read_text() == "# Demo\nhello world\n"
    log.undo()
    assert (workspace / "notes.txt").read_text() == "buy milk\n"


def test_undo_n_reverts_several_runs_to_the_oldest_content(log, workspace):
    for text in (b"one\n", b"two\n", b"three\n"):
        change(log, text.decode().strip(), [("notes.txt", text)])
    result = log.undo(count=2)
    assert [r["task"] for r in result.runs] == ["three", "two"]
    assert (workspace / "notes.txt").read_text() == "one\n"
    assert len(result.reverted) == 1  # one report per file


def test_a_file_changed_since_is_a_conflict_and_nothing_is_reverted(log, workspace):
    change(log, "agent", [("notes.txt", b"agent's\n"), ("README.md", b"agent's readme\n")])
    (workspace / "notes.txt").write_text("the user's own edit\n")
    result = log.undo()
    assert result.conflicts == ["notes.txt"] and not result.done
    assert (workspace / "notes.txt").read_text() == "the user's own edit\n"
    assert (workspace / "README.md").read_text() == "agent's readme\n"  # all or nothing
    assert len(log.pending()) == 1
    forced = log.undo(force=True)
    assert forced.done and (workspace / "notes.txt").read_text() == "buy milk\n"


def test_a_deleted_file_is_a_conflict_too(log, workspace):
    change(log, "agent", [("notes.txt", b"agent's\n")])
    (workspace / "notes.txt").unlink()
    assert log.undo().conflicts == ["notes.txt"]


def test_dry_run_shows_the_diff_and_changes_nothing(log, workspace):
    change(log, "agent", [("notes.txt", b"agent's\n")])
    result = log.undo(dry_run=True)
    assert not result.done and "+buy milk" in result.diff()
    assert (workspace / "notes.txt").read_text() == "agent's\n"
    assert len(log.pending()) == 1


def test_binary_previous_content_comes_back_byte_for_byte(log, workspace):
    data = bytes(range(256)) * 4
    (workspace / "blob.bin").write_bytes(data)
    change(log, "overwrite", [("blob.bin", b"text now")])
    log.undo()
    assert (workspace / "blob.bin").read_bytes() == data


def test_a_call_that_changed_nothing_leaves_no_record(log, workspace):
    recorder = log.begin("failed edit")
    recorder.before(workspace / "notes.txt")
    recorder.after(workspace / "notes.txt")
    assert recorder.changed == [] and log.records() == []


def test_records_are_per_workspace_and_seen_by_a_new_log(tmp_path, workspace):
    other = tmp_path / "other"
    other.mkdir()
    change(UndoLog(tmp_path / "undo", workspace), "here", [("notes.txt", b"x")])
    assert UndoLog(tmp_path / "undo", other).pending() == []
    assert [r["task"] for r in UndoLog(tmp_path / "undo", workspace).pending()] == ["here"]


def test_old_records_and_their_contents_are_pruned(tmp_path, workspace):
    log = UndoLog(tmp_path / "undo", workspace, keep=3)
    for index in range(5):
        change(log, f"run {index}", [(f"f{index}.txt", b"x"), ("notes.txt", f"v{index}\n".encode())])
    assert [r["task"] for r in log.records()] == ["run 4", "run 3", "run 2"]
    kept = {e["before"] for r in log.records() for e in r["files"] if e["before"]}
    assert {p.name for p in log.blobs.iterdir()} == kept


def test_count_must_be_positive(log):
    with pytest.raises(ValueError):
        log.undo(count=0)


# The agent loop records what its tools change.


def test_agent_runs_are_recorded_and_undone(scripted, tool_call, no_call, tmp_path, workspace):
    run = scripted(
        tool_call("write_file", path="docs/new.md", content="# New\n"),
        tool_call("edit_file", path="notes.txt", old_text="milk", new_text="bread"),
        tool_call("edit_file", path="notes.txt", old_text="absent", new_text="x"),  # fails: nothing changes
        no_call,
        "Done.",
        allow_all=True,
    )
    log = UndoLog(tmp_path / "undo", workspace)
    run.agent.undo = log
    result = run("write and edit")
    assert result.changed_files == ["docs/new.md", "notes.txt"]
    assert result.public()["changed_files"] == ["docs/new.md", "notes.txt"]
    reverted = log.undo()
    assert reverted.done and {r.path for r in reverted.reverted} == {"docs/new.md", "notes.txt"}
    assert not (workspace / "docs").exists()
    assert (workspace / "notes.txt").read_text() == "buy milk\n"


def test_shell_approval_says_it_cannot_be_undone(workspace):
    from squish.agent.sandbox import Workspace
    from squish.agent.tools import ToolContext, builtin_tools, preview

    shell = next(t for t in builtin_tools() if t.name == "run_shell")
    assert "cannot be undone" in preview(shell, {"command": "rm -rf build"}, ToolContext(Workspace(workspace)))
