"""Conversations and messages in SQLite, with full-text search.

One file under the data dir, WAL mode so a reader never waits for the
streaming writer. The schema is versioned with ``PRAGMA user_version``:
``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``, so every
release can open every older file.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.compat import StrEnum
from tui.images import StoredImage
from tui.locks import ProcessLock, is_held, locks_dir

DATABASE_NAME = "zootui.sqlite3"
# How long a step waits for another zootui writing to the same file before it says the file is busy.
BUSY_TIMEOUT_MS = 5000
# How long a zootui that lost the race to switch a new file to WAL waits before it asks again.
WAL_SWITCH_RETRY_SECONDS = 0.01

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: conversations, messages, search index, preferences.
    # AUTOINCREMENT: an id, once exported or shown, never comes back for another message.
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        is_open INTEGER NOT NULL DEFAULT 1,
        tab_position INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        model TEXT,
        state TEXT NOT NULL DEFAULT 'done'
            CHECK (state IN ('done', 'streaming', 'stopped', 'interrupted', 'error')),
        stats TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    -- Trigram tokens find substrings in any script (Chinese has no spaces to split words on).
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='id', tokenize='trigram');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TABLE preferences (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 1 -> 2: model jobs (download, recover, convert, quantize, smoke test, register) and their steps.
    # A step's result is NULL until it finishes, so a killed job resumes at the first NULL.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('catalog', 'checkpoint')),
        target TEXT NOT NULL,
        quant TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_by_target ON jobs(kind, target, quant);
    CREATE TABLE job_steps (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        result TEXT,
        finished_at REAL,
        PRIMARY KEY (job_id, position)
    );
    """,
    # 2 -> 3: arena battles. Each side's conversation is a JSON list of {role, content, stats?} messages;
    # winner is NULL until the vote. question_id is FastChat's battle id: an imported log keeps its own,
    # so importing the same file twice adds nothing.
    """
    CREATE TABLE battles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        question_id TEXT NOT NULL UNIQUE,
        model_a TEXT NOT NULL,
        model_b TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        conversation_a TEXT NOT NULL DEFAULT '[]',
        conversation_b TEXT NOT NULL DEFAULT '[]',
        winner TEXT CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
        source TEXT NOT NULL DEFAULT 'arena' CHECK (source IN ('arena', 'unattended', 'import')),
        created_at REAL NOT NULL,
        voted_at REAL
    );
    CREATE INDEX battles_by_vote ON battles(voted_at);
    """,
    # 3 -> 4: a conversation's moderation model ('' for none), and what it said about each user message.
    """
    ALTER TABLE conversations ADD COLUMN moderation_model TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN moderation TEXT;
    """,
    # 4 -> 5: an image attached to a message: the sha256 of the file kept under <data dir>/images
    # (named <sha256>.<format>, see tui.images), its format, and the name it was attached as.
    """
    ALTER TABLE messages ADD COLUMN image_sha256 TEXT;
    ALTER TABLE messages ADD COLUMN image_format TEXT;
    ALTER TABLE messages ADD COLUMN image_name TEXT;
    """,
    # 5 -> 6: the process lock (tui.locks, a file name under <data dir>/locks) held by the process that
    # streams a reply: a reply left 'streaming' whose lock nobody holds was cut off, whoever looks.
    """
    ALTER TABLE messages ADD COLUMN writer TEXT;
    """,
    # 6 -> 7: reply versions. Messages form a tree: regenerating a reply or editing a message adds a
    # sibling (same parent) instead of deleting the old one, and the conversation shows the branch that
    # ends at its leaf. Existing conversations become a single branch.
    """
    ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE;
    ALTER TABLE conversations ADD COLUMN leaf_id INTEGER;
    UPDATE messages SET parent_id = (
        SELECT MAX(earlier.id) FROM messages earlier
        WHERE earlier.conversation_id = messages.conversation_id AND earlier.id < messages.id);
    UPDATE conversations SET leaf_id = (SELECT MAX(id) FROM messages WHERE conversation_id = conversations.id);
    CREATE INDEX messages_by_parent ON messages(conversation_id, parent_id, id);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
FULL_DISK_BYTES = 64 * 1024
"""Less free space than this on the database's disk counts as full (SQLite needs room for its log)."""
AFTER_LEAF = -1
"""add_message's default parent: the last message of the branch the conversation shows."""
# Trigram search needs at least this many characters; shorter queries scan.
MIN_INDEXED_QUERY = 3


class StoreError(Exception):
    """A problem with the database file a user can act on."""


class MessageState(StrEnum):
    """Where a message is in its life; the ``messages.state`` CHECK constraint lists the same values."""

    DONE = "done"
    STREAMING = "streaming"
    """A reply being generated (and saved as it grows)."""
    STOPPED = "stopped"
    """The user stopped the reply; what came is kept."""
    INTERRUPTED = "interrupted"
    """The process died while it streamed; what was saved is kept."""
    ERROR = "error"
    """Generation failed part way; kept for the user, left out of the model's history."""


class JobKind(StrEnum):
    """What a job builds from; the job's ``target`` is read accordingly."""

    CATALOG = "catalog"
    """``target`` is a catalog variant id."""
    CHECKPOINT = "checkpoint"
    """``target`` is a local checkpoint directory."""


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Conversation:
    id: int
    title: str
    model: str
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    is_open: bool = True
    tab_position: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    moderation_model: str = ""
    """The library model that classifies each user message first; empty for none."""


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    model: str | None = None
    state: MessageState = MessageState.DONE
    stats: dict[str, Any] | None = None
    created_at: float = 0.0
    moderation: dict[str, Any] | None = None
    """A user message's label from the moderation model (``tui.moderation.Moderation``); None if unclassified."""
    image: StoredImage | None = None
    """The picture attached to the message, if any."""
    parent_id: int | None = None
    version: int = 1
    """Which of its versions (messages with the same parent) this is, from 1 in the order they were made."""
    versions: int = 1


@dataclass
class JobStep:
    name: str
    result: dict[str, Any] | None = None
    """What the finished step produced (paths, hashes, figures); None until it finishes."""
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None


@dataclass
class Job:
    id: int
    kind: JobKind
    target: str
    quant: str
    params: dict[str, Any] = field(default_factory=dict)
    state: JobState = JobState.PENDING
    error: str | None = None
    steps: list[JobStep] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Battle:
    """Two models answering the same prompts, names hidden until the vote (the arena's unit)."""

    id: int
    question_id: str
    model_a: str
    model_b: str
    params: dict[str, Any] = field(default_factory=dict)
    """Sampling settings both sides used."""
    conversation_a: list[dict[str, Any]] = field(default_factory=list)
    conversation_b: list[dict[str, Any]] = field(default_factory=list)
    winner: str | None = None
    """FastChat's vote names: 'model_a', 'model_b', 'tie', 'tie (bothbad)'; None before the vote."""
    source: str = "arena"
    """'arena' (voted in the screen), 'unattended' (answered by `zootui arena --prompts`), 'import'."""
    created_at: float = 0.0
    voted_at: float | None = None

    @property
    def prompt(self) -> str:
        return next((m["content"] for m in self.conversation_a if m["role"] == "user"), "")

    @property
    def turns(self) -> int:
        return sum(m["role"] == "user" for m in self.conversation_a)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int
    role: str
    snippet: str


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        params=json.loads(row["params"]),
        is_open=bool(row["is_open"]),
        tab_position=row["tab_position"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        moderation_model=row["moderation_model"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        model=row["model"],
        state=MessageState(row["state"]),
        stats=json.loads(row["stats"]) if row["stats"] else None,
        created_at=row["created_at"],
        moderation=json.loads(row["moderation"]) if row["moderation"] else None,
        image=StoredImage(row["image_sha256"], row["image_format"], row["image_name"]) if row["image_sha256"] else None,
        parent_id=row["parent_id"],
        **({"version": row["version"], "versions": row["versions"]} if "versions" in row.keys() else {}),
    )


def _job(row: sqlite3.Row, steps: list[sqlite3.Row]) -> Job:
    return Job(
        id=row["id"],
        kind=JobKind(row["kind"]),
        target=row["target"],
        quant=row["quant"],
        params=json.loads(row["params"]),
        state=JobState(row["state"]),
        error=row["error"],
        steps=[
            JobStep(
                name=step["name"],
                result=json.loads(step["result"]) if step["result"] else None,
                finished_at=step["finished_at"],
            )
            for step in steps
        ],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _battle(row: sqlite3.Row) -> Battle:
    return Battle(
        id=row["id"],
        question_id=row["question_id"],
        model_a=row["model_a"],
        model_b=row["model_b"],
        params=json.loads(row["params"]),
        conversation_a=json.loads(row["conversation_a"]),
        conversation_b=json.loads(row["conversation_b"]),
        winner=row["winner"],
        source=row["source"],
        created_at=row["created_at"],
        voted_at=row["voted_at"],
    )


class Store:
    """Thread-safe access to the database; every call is one short transaction."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        # Held while this process may stream replies into the database (taken at the first one).
        self._writer = ProcessLock(locks_dir(path.parent) / f"writer-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The generation thread writes streamed replies; the lock serialises all use.
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(_open_failure(path, error)) from error
        try:
            self._db.row_factory = sqlite3.Row
            # First, so that every later step waits for another zootui opening the same file at once.
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._use_write_ahead_log()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as error:
            self._db.close()
            raise StoreError(_open_failure(path, error)) from error
        except BaseException:
            self._db.close()
            raise

    def _use_write_ahead_log(self) -> None:
        """Switch a new file to WAL, waiting for the other zootuis opening it at once. The switch needs the file
        to itself, and while another connection holds its write lock SQLite answers "busy" at once, without the
        busy timeout, rather than risk two connections waiting for each other. In a fresh-clone CI run one of
        twenty `zootui list` started four at a time on new data dirs exited 2 with "busy"; four connections
        racing on a new file lost 2-3% of the time. Until the busy timeout has passed, the loser asks again."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                time.sleep(WAL_SWITCH_RETRY_SECONDS)

    @classmethod
    def open_default(cls) -> Store:
        from tui.config import data_dir

        return cls(data_dir() / DATABASE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._writer.release()
            self._writer.path.unlink(missing_ok=True)

    def _migrate(self) -> None:
        """Bring the schema up to date, each step once: processes starting together on a fresh data dir
        take turns under SQLite's write lock, and each reads the version again once it holds it."""
        while True:
            with self._transaction():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} was written by a newer zootui (schema {version}, this one knows "
                        f"{SCHEMA_VERSION}); upgrade zootui to open it."
                    )
                if version == SCHEMA_VERSION:
                    return
                for statement in _split_sql(MIGRATIONS[version]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version + 1}")

    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _transaction(self):
        return _Transaction(self._db, self._lock, self.path)

    # Conversations

    def create_conversation(
        self, title: str, model: str, system_prompt: str = "", params: dict[str, Any] | None = None
    ) -> Conversation:
        now = time.time()
        with self._transaction():
            position = self._db.execute(
                "SELECT COALESCE(MAX(tab_position) + 1, 0) FROM conversations WHERE is_open"
            ).fetchone()[0]
            cursor = self._db.execute(
                "INSERT INTO conversations (title, model, system_prompt, params, is_open, tab_position,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                (title, model, system_prompt, json.dumps(params or {}), position, now, now),
            )
            return self.conversation(cursor.lastrowid)

    def conversation(self, conversation_id: int) -> Conversation:
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise StoreError(
                f"no conversation with id {conversation_id}; `zootui search` or `zootui list` shows the ids."
            )
        return _conversation(row)

    def conversations(self, *, open_only: bool = False) -> list[Conversation]:
        query = "SELECT * FROM conversations"
        if open_only:
            query += " WHERE is_open ORDER BY tab_position, id"
        else:
            query += " ORDER BY updated_at DESC, id DESC"
        with self._lock:
            return [_conversation(row) for row in self._db.execute(query)]

    def update_conversation(self, conversation_id: int, **changes: Any) -> Conversation:
        allowed = {"title", "model", "system_prompt", "params", "is_open", "tab_position", "moderation_model"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"])
        assignments = ", ".join(f"{column} = ?" for column in changes)
        with self._transaction():
            self._db.execute(
                f"UPDATE conversations SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), time.time(), conversation_id),
            )
        return self.conversation(conversation_id)

    def set_tab_order(self, conversation_ids: list[int]) -> None:
        with self._transaction():
            for position, conversation_id in enumerate(conversation_ids):
                self._db.execute("UPDATE conversations SET tab_position = ? WHERE id = ?", (position, conversation_id))

    def delete_conversation(self, conversation_id: int) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # Messages

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        state: MessageState = MessageState.DONE,
        stats: dict[str, Any] | None = None,
        image: StoredImage | None = None,
        parent_id: int | None = AFTER_LEAF,
    ) -> Message:
        """Add a message after parent_id (by default the end of the branch shown) and show its branch."""
        now = time.time()
        writer = None
        if state is MessageState.STREAMING:
            self._writer.acquire()  # a fresh unique name: only this Store ever takes it
            writer = self._writer.path.name
        with self._transaction():
            if parent_id == AFTER_LEAF:
                parent_id = self._leaf(conversation_id)
            cursor = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, model, state, stats, created_at,"
                " image_sha256, image_format, image_name, writer, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    role,
                    content,
                    model,
                    state,
                    json.dumps(stats) if stats else None,
                    now,
                    image.sha256 if image else None,
                    image.format if image else None,
                    image.name if image else None,
                    writer,
                    parent_id,
                ),
            )
            message_id = cursor.lastrowid
            self._db.execute(
                "UPDATE conversations SET updated_at = ?, leaf_id = ? WHERE id = ?", (now, message_id, conversation_id)
            )
            versions = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND parent_id IS ?",
                (conversation_id, parent_id),
            ).fetchone()[0]
        return Message(
            id=message_id,
            conversation_id=conversation_id,
            role=role,
            content=content,
            model=model,
            state=state,
            stats=stats,
            created_at=now,
            image=image,
            parent_id=parent_id,
            version=versions,
            versions=versions,
        )

    def _leaf(self, conversation_id: int) -> int | None:
        row = self._db.execute("SELECT leaf_id FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return row["leaf_id"] if row else None

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        state: MessageState | None = None,
        stats: dict[str, Any] | None = None,
        moderation: dict[str, Any] | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if state is not None:
            changes["state"] = state
        if stats is not None:
            changes["stats"] = json.dumps(stats)
        if moderation is not None:
            changes["moderation"] = json.dumps(moderation)
        if not changes:
            return
        assignments = ", ".join(f"{column} = ?" for column in changes)
        with self._transaction():
            self._db.execute(f"UPDATE messages SET {assignments} WHERE id = ?", (*changes.values(), message_id))

    def messages(self, conversation_id: int) -> list[Message]:
        """The branch the conversation shows, first message first, each with its version number."""
        with self._lock:
            rows = self._db.execute(
                "WITH RECURSIVE branch(id) AS ("
                " SELECT leaf_id FROM conversations WHERE id = :conversation AND leaf_id IS NOT NULL"
                " UNION ALL SELECT m.parent_id FROM messages m JOIN branch ON m.id = branch.id"
                " WHERE m.parent_id IS NOT NULL)"
                " SELECT m.*,"
                " (SELECT COUNT(*) FROM messages s WHERE s.conversation_id = :conversation"
                "  AND s.parent_id IS m.parent_id) AS versions,"
                " (SELECT COUNT(*) FROM messages s WHERE s.conversation_id = :conversation"
                "  AND s.parent_id IS m.parent_id AND s.id <= m.id) AS version"
                " FROM messages m JOIN branch ON m.id = branch.id ORDER BY m.id",
                {"conversation": conversation_id},
            ).fetchall()
        return [_message(row) for row in rows]

    def all_messages(self, conversation_id: int) -> list[Message]:
        """Every message of every branch, oldest first (parent_id links them into a tree)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [_message(row) for row in rows]

    def versions_of(self, message_id: int) -> list[int]:
        """The ids of a message and its siblings (the versions shown in its place), oldest first."""
        with self._lock:
            return [
                row["id"]
                for row in self._db.execute(
                    "SELECT s.id FROM messages m JOIN messages s ON s.conversation_id = m.conversation_id"
                    " AND s.parent_id IS m.parent_id WHERE m.id = ? ORDER BY s.id",
                    (message_id,),
                )
            ]

    def show_branch(self, conversation_id: int, message_id: int | None) -> None:
        """Show the branch through message_id (None: before the first message), continuing below it along
        the newest message at each step."""
        with self._transaction():
            self._show_branch(conversation_id, message_id)

    def _show_branch(self, conversation_id: int, message_id: int | None) -> None:
        leaf = message_id
        while leaf is not None:
            newest = self._db.execute(
                "SELECT MAX(id) FROM messages WHERE conversation_id = ? AND parent_id = ?", (conversation_id, leaf)
            ).fetchone()[0]
            if newest is None:
                break
            leaf = newest
        self._db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (leaf, conversation_id))

    def show_until(self, conversation_id: int, message_id: int | None) -> None:
        """End the branch shown at message_id (None: show no message), hiding the messages after it."""
        with self._transaction():
            self._db.execute("UPDATE conversations SET leaf_id = ? WHERE id = ?", (message_id, conversation_id))

    def delete_message(self, message_id: int) -> None:
        """Delete a message and the messages after it in every branch; the conversation then shows the
        newest remaining version in its place."""
        with self._transaction():
            row = self._db.execute("SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,))
            row = row.fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            conversation_id, parent_id = row["conversation_id"], row["parent_id"]
            if self._db.execute(
                "SELECT 1 FROM messages WHERE id = (SELECT leaf_id FROM conversations WHERE id = ?)",
                (conversation_id,),
            ).fetchone():
                return  # the branch shown did not go through the deleted message
            newest_sibling = self._db.execute(
                "SELECT MAX(id) FROM messages WHERE conversation_id = ? AND parent_id IS ?",
                (conversation_id, parent_id),
            ).fetchone()[0]
            self._show_branch(conversation_id, newest_sibling if newest_sibling is not None else parent_id)

    def mark_interrupted_replies(self) -> int:
        """Replies left 'streaming' by a process that is gone (its writer lock is free) are kept, marked
        interrupted; those another living process is still streaming are left alone. Returns how many."""
        locks = locks_dir(self.path.parent)
        with self._lock:
            writers = [
                row["writer"]
                for row in self._db.execute(
                    "SELECT DISTINCT writer FROM messages WHERE state = ?", (MessageState.STREAMING,)
                )
            ]
        # Replies from before writers were recorded (NULL) have no one left to finish them either.
        gone = [w for w in writers if w is None or (w != self._writer.path.name and not is_held(locks / w))]
        marked = 0
        for writer in gone:
            with self._transaction():
                marked += self._db.execute(
                    "UPDATE messages SET state = ? WHERE state = ? AND writer IS ?",
                    (MessageState.INTERRUPTED, MessageState.STREAMING, writer),
                ).rowcount
            if writer is not None:
                (locks / writer).unlink(missing_ok=True)
        return marked

    # Search

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        text = text.strip()
        if not text:
            return []
        with self._lock:
            if len(text) >= MIN_INDEXED_QUERY:
                phrase = '"' + text.replace('"', '""') + '"'
                rows = self._db.execute(
                    "SELECT m.id AS message_id, m.role, m.conversation_id, c.title,"
                    " snippet(messages_fts, 0, '[', ']', '…', 64) AS snippet"
                    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                    " JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
                    (phrase, limit),
                ).fetchall()
            else:
                pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                rows = self._db.execute(
                    "SELECT m.id AS message_id, m.role, m.conversation_id, c.title,"
                    " substr(m.content, max(1, instr(m.content, ?) - 40), 100) AS snippet"
                    " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE m.content LIKE ? ESCAPE '\\' ORDER BY m.id DESC LIMIT ?",
                    (text, pattern, limit),
                ).fetchall()
        return [
            SearchHit(
                conversation_id=row["conversation_id"],
                conversation_title=row["title"],
                message_id=row["message_id"],
                role=row["role"],
                snippet=" ".join(row["snippet"].split()),
            )
            for row in rows
        ]

    # Preferences (state the app remembers, as opposed to the user's config file)

    def preference(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM preferences WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_preference(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO preferences (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # Jobs

    def create_job(
        self, kind: JobKind, target: str, quant: str, steps: list[str], params: dict[str, Any] | None = None
    ) -> Job:
        now = time.time()
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO jobs (kind, target, quant, params, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, target, quant, json.dumps(params or {}), now, now),
            )
            job_id = cursor.lastrowid
            self._db.executemany(
                "INSERT INTO job_steps (job_id, position, name) VALUES (?, ?, ?)",
                [(job_id, position, name) for position, name in enumerate(steps)],
            )
        return self.job(job_id)

    def job(self, job_id: int) -> Job:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            steps = self._db.execute("SELECT * FROM job_steps WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
        if row is None:
            raise StoreError(f"no job with id {job_id}.")
        return _job(row, steps)

    def jobs(self, *, unfinished_only: bool = False) -> list[Job]:
        query = "SELECT id FROM jobs" + (" WHERE state != ?" if unfinished_only else "") + " ORDER BY id DESC"
        with self._lock:
            ids = [row["id"] for row in self._db.execute(query, (JobState.DONE,) if unfinished_only else ())]
        return [self.job(job_id) for job_id in ids]

    def unfinished_job(self, kind: JobKind, target: str, quant: str) -> Job | None:
        """The newest job for this target and quant that has not finished, to resume instead of restarting."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE kind = ? AND target = ? AND quant = ? AND state != ?"
                " ORDER BY id DESC LIMIT 1",
                (kind, target, quant, JobState.DONE),
            ).fetchone()
        return None if row is None else self.job(row["id"])

    def update_job(self, job_id: int, state: JobState, error: str | None = None) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE id = ?", (state, error, time.time(), job_id)
            )

    def finish_step(self, job_id: int, position: int, result: dict[str, Any]) -> None:
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE job_steps SET result = ?, finished_at = ? WHERE job_id = ? AND position = ?",
                (json.dumps(result), now, job_id, position),
            )
            self._db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (now, job_id))

    def reopen_steps_from(self, job_id: int, position: int) -> None:
        """Mark a step and every later one unfinished (their outputs are gone and must be redone)."""
        with self._transaction():
            self._db.execute(
                "UPDATE job_steps SET result = NULL, finished_at = NULL WHERE job_id = ? AND position >= ?",
                (job_id, position),
            )

    # Arena battles

    def create_battle(
        self, model_a: str, model_b: str, params: dict[str, Any], *, question_id: str, source: str = "arena"
    ) -> Battle:
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO battles (question_id, model_a, model_b, params, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (question_id, model_a, model_b, json.dumps(params), source, time.time()),
            )
        return self.battle(cursor.lastrowid)

    def battle(self, battle_id: int) -> Battle:
        with self._lock:
            row = self._db.execute("SELECT * FROM battles WHERE id = ?", (battle_id,)).fetchone()
        if row is None:
            raise StoreError(f"no battle with id {battle_id}.")
        return _battle(row)

    def battles(self, *, voted: bool | None = None) -> list[Battle]:
        """Battles oldest first: all of them, only the voted ones, or only those waiting for a vote."""
        where = {None: "", True: " WHERE winner IS NOT NULL", False: " WHERE winner IS NULL"}[voted]
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM battles{where} ORDER BY id").fetchall()
        return [_battle(row) for row in rows]

    def battle_votes(self) -> list[tuple[str, str, str, float]]:
        """(model_a, model_b, winner, voted_at) of every voted battle, without the conversations."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model_a, model_b, winner, voted_at FROM battles WHERE winner IS NOT NULL ORDER BY id"
            ).fetchall()
        return [(row["model_a"], row["model_b"], row["winner"], row["voted_at"]) for row in rows]

    def save_battle_conversations(
        self, battle_id: int, conversation_a: list[dict[str, Any]], conversation_b: list[dict[str, Any]]
    ) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE battles SET conversation_a = ?, conversation_b = ? WHERE id = ?",
                (
                    json.dumps(conversation_a, ensure_ascii=False),
                    json.dumps(conversation_b, ensure_ascii=False),
                    battle_id,
                ),
            )

    def vote_battle(self, battle_id: int, winner: str) -> Battle:
        with self._transaction():
            self._db.execute(
                "UPDATE battles SET winner = ?, voted_at = ? WHERE id = ?", (winner, time.time(), battle_id)
            )
        return self.battle(battle_id)

    def delete_battle(self, battle_id: int) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM battles WHERE id = ?", (battle_id,))

    def import_battles(self, battles: list[Battle]) -> int:
        """Add voted battles from a log in one transaction; those whose question_id is here already are
        skipped. Returns how many were added."""
        with self._transaction():
            added = 0
            for battle in battles:
                added += self._db.execute(
                    "INSERT OR IGNORE INTO battles (question_id, model_a, model_b, params, conversation_a,"
                    " conversation_b, winner, source, created_at, voted_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'import', ?, ?)",
                    (
                        battle.question_id,
                        battle.model_a,
                        battle.model_b,
                        json.dumps(battle.params),
                        json.dumps(battle.conversation_a, ensure_ascii=False),
                        json.dumps(battle.conversation_b, ensure_ascii=False),
                        battle.winner,
                        battle.created_at,
                        battle.voted_at,
                    ),
                ).rowcount
        return added


def _open_failure(path: Path, error: Exception) -> str:
    """One line for a database that cannot be opened, advising to move it aside only when it is unusable."""
    name = getattr(error, "sqlite_errorname", "")
    text = str(error)
    if isinstance(error, OSError):
        return f"cannot create {path.parent}: {error.strerror or error}; check the data directory (ZOOTUI_DATA_DIR)."
    if name == "SQLITE_FULL" or "database or disk is full" in text or _disk_is_full(path.parent):
        return f"cannot open {path}: the disk is full; free some space and try again (nothing in it was changed)."
    if _is_busy(error):
        return f"{path} is busy (another zootui is writing to it); try again in a moment."
    if name in ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH") or "unable to open" in text:
        return f"cannot open {path}: {text}; check that you may read and write it and its directory."
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return f"cannot read {path}: a disk I/O error ({text}); check the disk."
    return (
        f"{path}: not a usable zootui database ({text}); "
        f"move it aside to start a new one (your other files are untouched)."
    )


def _disk_is_full(directory: Path) -> bool:
    """Whether the disk holding ``directory`` has no room left (SQLite reports that as an I/O error when
    it cannot even create its write-ahead log)."""
    try:
        return shutil.disk_usage(directory).free < FULL_DISK_BYTES
    except OSError:
        return False


def _is_busy(error: BaseException) -> bool:
    """Whether SQLite refused because another connection holds the file."""
    return getattr(error, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(error)


def _is_disk_full(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorname", "") == "SQLITE_FULL" or "database or disk is full" in str(error)
    )


class _Transaction:
    """One write transaction. A full disk ends it in StoreError (one line): SQLite rolls the change back,
    so what was saved before stays intact."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, path: Path):
        self._db = db
        self._lock = lock
        self._path = path

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:  # busy past the timeout: the next caller must still get the lock
            self._lock.release()
            raise

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            try:
                self._db.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error as error:
                if not _is_disk_full(error):
                    raise
                if exc is None:
                    exc = error
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            if _is_disk_full(exc):
                raise StoreError(
                    f"{self._path}: the disk is full, so the last change was not saved; free some space "
                    "(everything saved before is intact)."
                ) from exc
        finally:
            self._lock.release()


def _split_sql(script: str) -> Iterator[str]:
    """Statements of a migration script, keeping trigger bodies whole."""
    statement: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        statement.append(line)
        joined = "\n".join(statement).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            yield joined
            statement = []
    rest = "\n".join(statement).strip()
    if rest:
        yield rest
