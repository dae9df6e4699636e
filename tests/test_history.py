"""The chat history database: schema, migrations, messages, and durability under a kill."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from squish.history import INCOMPLETE, MIGRATIONS, SCHEMA_VERSION, History, HistoryError


def test_new_database_is_wal_and_at_the_current_version(tmp_path):
    history = History(tmp_path / "h.db")
    assert history.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert history.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    history.close()
    again = History(tmp_path / "h.db")  # reopening runs no migration twice
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "h.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match="schema version"):
        History(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


NOTES = """
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL DEFAULT 'a; b');
CREATE TRIGGER note_per_message AFTER INSERT ON messages BEGIN
    INSERT INTO notes (body) VALUES ('for ' || new.id || '; noted');
END;
INSERT INTO notes (body) SELECT content FROM messages;
"""


def test_a_migration_with_a_trigger_and_semicolons_in_strings_runs_over_existing_data(tmp_path):
    path = tmp_path / "h.db"
    old = History(path)
    chat = old.create_chat("smollm2:135m", "be brief; please")
    old.add_message(chat.id, "user", "keep me; I was here first")
    old.close()
    history = History(path, migrations=[*MIGRATIONS, NOTES])
    assert history.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert [m.content for m in history.messages(chat.id)] == ["keep me; I was here first"]
    assert history.chat(chat.id).system_prompt == "be brief; please"
    answer = history.add_message(chat.id, "assistant", "ok")  # the trigger the migration made fires
    notes = [row[0] for row in history.db.execute("SELECT body FROM notes ORDER BY id")]
    assert notes == ["keep me; I was here first", f"for {answer}; noted"]
    history.close()


def test_a_failing_migration_changes_nothing(tmp_path):
    path = tmp_path / "h.db"
    History(path).close()
    broken = "CREATE TABLE half (x);\nINSERT INTO no_such_table VALUES (1);"
    with pytest.raises(HistoryError, match="no_such_table"):
        History(path, migrations=[*MIGRATIONS, broken])
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    db.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(HistoryError, match="cannot open the chat history"):
        History(path)


def test_chats_messages_titles_and_stats(tmp_path):
    history = History(tmp_path / "h.db")
    empty = history.create_chat("smollm2:135m")
    chat = history.create_chat("smollm2:135m", "Be brief.")
    history.add_message(chat.id, "user", "  What is\nthe capital   of France?  ")
    answer = history.add_message(chat.id, "assistant", "", INCOMPLETE)
    history.update_message(answer, "Paris.", "stop", {"ttft_ms": 12.5, "decode_tps": 9.0})
    assert [c.id for c in history.chats()] == [chat.id]  # chats without messages are not listed
    assert history.chat(empty.id).message_count == 0
    stored = history.chat(chat.id)
    assert stored.title == "What is the capital of France?" and stored.system_prompt == "Be brief."
    messages = history.messages(chat.id)
    assert [(m.role, m.content, m.finish_reason) for m in messages] == [
        ("user", "  What is\nthe capital   of France?  ", None),
        ("assistant", "Paris.", "stop"),
    ]
    assert messages[1].stats == {"ttft_ms": 12.5, "decode_tps": 9.0}
    history.close()


def test_rename_delete_clear_and_recent_prompts(tmp_path):
    history = History(tmp_path / "h.db")
    first = history.create_chat()
    history.add_message(first.id, "user", "a")
    history.add_message(first.id, "user", "b")
    second = history.create_chat()
    history.add_message(second.id, "user", "a")
    assert history.recent_prompts() == ["b", "a"]  # oldest first, each once, newest use wins
    history.rename(first.id, "x" * 100)
    assert len(history.chat(first.id).title) == 60
    with pytest.raises(HistoryError, match="cannot be empty"):
        history.rename(first.id, "   ")
    history.clear_messages(second.id)
    assert history.messages(second.id) == [] and history.chat(second.id) is not None
    history.delete_chat(first.id)
    assert history.chat(first.id) is None
    assert history.db.execute("SELECT count(*) FROM messages WHERE chat_id = ?", (first.id,)).fetchone()[0] == 0
    assert history.last_chat() is None
    history.close()


def test_last_chat_is_the_most_recently_updated(tmp_path):
    now = [1000.0]
    history = History(tmp_path / "h.db", clock=lambda: now[0])
    old = history.create_chat()
    history.add_message(old.id, "user", "old")
    now[0] += 10
    new = history.create_chat()
    history.add_message(new.id, "user", "new")
    assert history.last_chat().id == new.id
    now[0] += 10
    history.add_message(old.id, "user", "old again")
    assert history.last_chat().id == old.id
    history.close()


def test_a_kill_mid_answer_loses_no_earlier_message(tmp_path):
    """A writer killed with SIGKILL while it streams an answer into the history."""
    path = tmp_path / "h.db"
    script = textwrap.dedent(
        f"""
        import sys
        from squish.history import History, INCOMPLETE
        history = History({str(path)!r})
        chat = history.create_chat("smollm2:135m")
        for i in range(20):
            history.add_message(chat.id, "user", f"question {{i}}")
            history.add_message(chat.id, "assistant", f"answer {{i}}", "stop")
        history.add_message(chat.id, "user", "last question")
        answer = history.add_message(chat.id, "assistant", "", INCOMPLETE)
        print("ready", flush=True)
        text = ""
        while True:
            text += "token "
            history.update_message(answer, text)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    history = History(path)
    assert history.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    messages = history.messages(history.last_chat().id)
    assert len(messages) == 42
    assert [m.content for m in messages[:40:2]] == [f"question {i}" for i in range(20)]
    assert messages[-1].finish_reason == INCOMPLETE and set(messages[-1].content.split()) <= {"token"}
    history.close()


def test_a_failed_migration_rolls_back_whole(tmp_path):
    path = tmp_path / "h.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (x)")  # in the way of migration 1's second table
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="cannot open the chat history"):
        History(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"messages"}  # migration 1's first table was rolled back with it
    db.close()
