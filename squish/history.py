"""Chat history: chats, messages, per-message stats, system prompt and model, in SQLite.

One database file in the squish home (`FILE`), with the chats' saved KV caches beside it in
`kv/` (`History.cache_path`; squish/engine/prompt_cache.py writes them). WAL mode, so a crash or kill loses at most the
statement in flight; every message is committed as soon as it exists, and an answer in
progress is saved as it streams (finish_reason "incomplete" until it ends). The schema
version lives in `PRAGMA user_version`; `MIGRATIONS[i]` moves a database from version
i to i + 1, each in its own transaction.

The connection belongs to the thread that opened it (the Textual event loop).
"""

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MIGRATIONS = [
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        model TEXT,
        system_prompt TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content TEXT NOT NULL,
        created REAL NOT NULL,
        finish_reason TEXT,
        stats TEXT
    );
    CREATE INDEX messages_by_chat ON messages (chat_id, id);
    CREATE INDEX chats_by_updated ON chats (updated);
    """,
    # A thinking model's <think> block, apart from its answer; /compact's summary, which stands in
    # for the messages before `context_from` in the model's context (the messages stay).
    """
    ALTER TABLE messages ADD COLUMN thinking TEXT;
    ALTER TABLE chats ADD COLUMN summary TEXT;
    ALTER TABLE chats ADD COLUMN context_from INTEGER
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
FILE = "history.db"
KV_DIR = "kv"
SUMMARY_REQUEST = "Summarize our conversation so far."
INCOMPLETE = "incomplete"
TITLE_CHARS = 60


class HistoryError(Exception):
    pass


@dataclass
class Message:
    id: int
    role: str
    content: str
    finish_reason: str | None = None
    stats: dict = field(default_factory=dict)
    thinking: str | None = None


@dataclass
class Chat:
    id: int
    title: str
    model: str | None
    system_prompt: str | None
    created: float
    updated: float
    message_count: int = 0
    summary: str | None = None
    context_from: int | None = None  # the first message id the model's context holds, after the summary


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class History:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time, migrations: list[str] = MIGRATIONS) -> None:
        """`migrations` is the schema's history (tests give a longer one to check the runner)."""
        self.path = Path(path)
        self.clock = clock
        self.migrations = migrations
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"cannot open the chat history {self.path}: {exc}") from None
        except OSError as exc:
            raise HistoryError(f"cannot create {self.path.parent}: {exc}") from None

    def migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        known = len(self.migrations)
        if version > known:
            raise HistoryError(f"{self.path} has schema version {version}; this squish knows up to {known}")
        for target in range(version, known):
            # One script per migration, its own transaction inside it: SQLite's parser splits the
            # statements (triggers, strings holding ';'), and a failure rolls the whole step back.
            script = f"BEGIN IMMEDIATE;\n{self.migrations[target]}\n;PRAGMA user_version = {target + 1};\nCOMMIT;"
            try:
                self.db.executescript(script)
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    @property
    def kv_dir(self) -> Path:
        return self.path.parent / KV_DIR

    def cache_path(self, chat_id: int) -> Path:
        """Where the chat's KV cache is saved."""
        return self.kv_dir / f"chat-{chat_id}.safetensors"

    # Chats.

    def create_chat(self, model: str | None = None, system_prompt: str | None = None) -> Chat:
        now = self.clock()
        cursor = self.db.execute(
            "INSERT INTO chats (model, system_prompt, created, updated) VALUES (?, ?, ?, ?)",
            (model, system_prompt, now, now),
        )
        return Chat(cursor.lastrowid, "", model, system_prompt, now, now)

    def chat(self, chat_id: int) -> Chat | None:
        row = self.db.execute(
            "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.chat_id = c.id) AS n FROM chats c WHERE id = ?",
            (chat_id,),
        ).fetchone()
        return _chat(row) if row else None

    def chats(self) -> list[Chat]:
        """Chats that hold at least one message, the most recently updated first."""
        rows = self.db.execute(
            "SELECT c.*, count(m.id) AS n FROM chats c JOIN messages m ON m.chat_id = c.id "
            "GROUP BY c.id ORDER BY c.updated DESC, c.id DESC"
        ).fetchall()
        return [_chat(row) for row in rows]

    def last_chat(self) -> Chat | None:
        chats = self.chats()
        return chats[0] if chats else None

    def rename(self, chat_id: int, title: str) -> None:
        title = title_from(title)
        if not title:
            raise HistoryError("a chat title cannot be empty")
        self.db.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id))

    def delete_chat(self, chat_id: int) -> None:
        self.db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def set_system_prompt(self, chat_id: int, text: str | None) -> None:
        self.db.execute("UPDATE chats SET system_prompt = ?, updated = ? WHERE id = ?", (text, self.clock(), chat_id))

    def set_model(self, chat_id: int, model: str | None) -> None:
        self.db.execute("UPDATE chats SET model = ? WHERE id = ?", (model, chat_id))

    def clear_messages(self, chat_id: int) -> None:
        self.db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,))
        self.db.execute("UPDATE chats SET summary = NULL, context_from = NULL WHERE id = ?", (chat_id,))

    def set_summary(self, chat_id: int, summary: str, context_from: int) -> None:
        """/compact: `summary` stands in for the messages before `context_from` (they stay saved)."""
        self.db.execute(
            "UPDATE chats SET summary = ?, context_from = ?, updated = ? WHERE id = ?",
            (summary, context_from, self.clock(), chat_id),
        )

    def context(self, chat_id: int) -> list[dict]:
        """The chat as the model sees it, without the system prompt: the summary of /compact as a
        request and its answer, then the messages from `context_from` on (empty ones skipped;
        thinking never included, as thinking models' templates expect)."""
        chat = self.chat(chat_id)
        if chat is None:
            return []
        turns = []
        if chat.summary:
            turns += [{"role": "user", "content": SUMMARY_REQUEST}, {"role": "assistant", "content": chat.summary}]
        for message in self.messages(chat_id):
            if message.content and (chat.context_from is None or message.id >= chat.context_from):
                turns.append({"role": message.role, "content": message.content})
        return turns

    # Messages.

    def add_message(
        self,
        chat_id: int,
        role: str,
        content: str,
        finish_reason: str | None = None,
        stats: dict | None = None,
        thinking: str | None = None,
    ) -> int:
        now = self.clock()
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO messages (chat_id, role, content, created, finish_reason, stats, thinking) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (chat_id, role, content, now, finish_reason, json.dumps(stats) if stats else None, thinking or None),
            )
            self.db.execute(
                "UPDATE chats SET updated = ?, title = CASE WHEN title = '' AND ? = 'user' THEN ? ELSE title END "
                "WHERE id = ?",
                (now, role, title_from(content), chat_id),
            )
        return cursor.lastrowid

    def update_message(
        self,
        message_id: int,
        content: str,
        finish_reason: str | None = None,
        stats: dict | None = None,
        thinking: str | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE messages SET content = ?, finish_reason = coalesce(?, finish_reason), "
            "stats = coalesce(?, stats), thinking = coalesce(?, thinking) WHERE id = ?",
            (content, finish_reason, json.dumps(stats) if stats else None, thinking or None, message_id),
        )

    def delete_message(self, message_id: int) -> None:
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def messages(self, chat_id: int) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, role, content, finish_reason, stats, thinking FROM messages WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        ).fetchall()
        return [
            Message(
                row["id"],
                row["role"],
                row["content"],
                row["finish_reason"],
                json.loads(row["stats"] or "{}"),
                row["thinking"],
            )
            for row in rows
        ]

    def recent_prompts(self, limit: int = 200) -> list[str]:
        """The user's earlier prompts across all chats, oldest first, without repeats."""
        rows = self.db.execute(
            "SELECT content FROM messages WHERE role = 'user' ORDER BY id DESC LIMIT ?", (limit * 2,)
        ).fetchall()
        seen, prompts = set(), []
        for row in rows:
            if row[0] not in seen:
                seen.add(row[0])
                prompts.append(row[0])
        return prompts[:limit][::-1]


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _chat(row) -> Chat:
    return Chat(
        row["id"],
        row["title"],
        row["model"],
        row["system_prompt"],
        row["created"],
        row["updated"],
        row["n"],
        row["summary"],
        row["context_from"],
    )
