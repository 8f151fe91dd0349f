import sqlite3
import subprocess
import threading

import pytest
from support import zootui_command

import tui.store
from tui.store import DATABASE_NAME, MIGRATIONS, SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "zootui.sqlite3")
    yield store
    store.close()


def test_new_database_is_at_the_current_schema_in_wal_mode(store):
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    journal = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_reopening_keeps_everything(tmp_path):
    path = tmp_path / "db.sqlite3"
    first = Store(path)
    conversation = first.create_conversation("Hello", "smollm2-135m-instruct", "be brief", {"temperature": 0.1})
    first.add_message(conversation.id, "user", "hi")
    first.close()
    second = Store(path)
    [again] = second.conversations()
    assert (again.title, again.system_prompt, again.params) == ("Hello", "be brief", {"temperature": 0.1})
    assert [m.content for m in second.messages(again.id)] == ["hi"]


def test_newer_schema_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "db.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer zootui"):
        Store(path)


def test_corrupt_file_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        Store(path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_tabs_keep_their_order_and_closed_ones_leave_the_open_list(store):
    a = store.create_conversation("a", "m")
    b = store.create_conversation("b", "m")
    c = store.create_conversation("c", "m")
    store.set_tab_order([c.id, a.id, b.id])
    store.update_conversation(a.id, is_open=False)
    assert [conv.id for conv in store.conversations(open_only=True)] == [c.id, b.id]
    assert {conv.id for conv in store.conversations()} == {a.id, b.id, c.id}


def test_search_finds_substrings_in_any_script_with_snippets(store):
    conversation = store.create_conversation("zoo", "m")
    store.add_message(conversation.id, "user", "How do I quantize Vicuna to q4_k_m?")
    store.add_message(conversation.id, "assistant", "用 llama.cpp 量化模型，然后聊天。")
    [hit] = store.search("quantize vicuna")
    assert hit.conversation_id == conversation.id and hit.role == "user"
    assert "[quantize Vicuna]" in hit.snippet
    [chinese] = store.search("量化模型")
    assert chinese.role == "assistant"
    assert store.search("no such words here") == []


def test_short_queries_and_fts_syntax_are_plain_text(store):
    conversation = store.create_conversation("zoo", "m")
    store.add_message(conversation.id, "user", 'say "OR" AND NOT * 猫')
    assert len(store.search("猫")) == 1
    assert len(store.search('"OR" AND NOT *')) == 1
    assert store.search("100%") == []


def test_search_sees_updates_and_deletes(store):
    conversation = store.create_conversation("zoo", "m")
    message = store.add_message(conversation.id, "assistant", "", state="streaming")
    store.update_message(message.id, content="partial streamed text")
    assert len(store.search("streamed")) == 1
    store.delete_conversation(conversation.id)
    assert store.search("streamed") == []
    assert store.messages(conversation.id) == []


def test_streaming_replies_left_behind_are_marked_interrupted(store):
    conversation = store.create_conversation("zoo", "m")
    message = store.add_message(conversation.id, "assistant", "half a rep", state="streaming")
    assert store.mark_interrupted_replies() == 1
    [kept] = store.messages(conversation.id)
    assert (kept.id, kept.content, kept.state) == (message.id, "half a rep", "interrupted")


def test_delete_message_removes_it_and_what_follows(store):
    conversation = store.create_conversation("zoo", "m")
    ids = [
        store.add_message(conversation.id, role, text).id
        for role, text in (("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4"))
    ]
    store.delete_message(ids[2])
    assert [m.content for m in store.messages(conversation.id)] == ["1", "2"]
    assert [m.content for m in store.all_messages(conversation.id)] == ["1", "2"]
    assert store.search("4") == []


def test_versions_are_siblings_and_the_conversation_shows_one_branch(store):
    conversation = store.create_conversation("zoo", "m")
    question = store.add_message(conversation.id, "user", "q")
    first = store.add_message(conversation.id, "assistant", "first answer")
    store.add_message(conversation.id, "user", "follow-up")
    store.show_until(conversation.id, question.id)
    second = store.add_message(conversation.id, "assistant", "second answer")
    assert (second.parent_id, second.version, second.versions) == (question.id, 2, 2)
    shown = store.messages(conversation.id)
    assert [m.content for m in shown] == ["q", "second answer"]
    assert [(m.version, m.versions) for m in shown] == [(1, 1), (2, 2)]
    assert store.versions_of(first.id) == [first.id, second.id]
    store.show_branch(conversation.id, first.id)
    assert [m.content for m in store.messages(conversation.id)] == ["q", "first answer", "follow-up"]
    assert len(store.all_messages(conversation.id)) == 4
    store.delete_message(first.id)
    assert [m.content for m in store.messages(conversation.id)] == ["q", "second answer"], "the other version shows"
    store.delete_message(second.id)
    assert [m.content for m in store.messages(conversation.id)] == ["q"]


def test_a_first_message_can_have_versions_too(store):
    conversation = store.create_conversation("zoo", "m")
    original = store.add_message(conversation.id, "user", "hello")
    store.add_message(conversation.id, "assistant", "hi")
    store.show_until(conversation.id, None)
    edited = store.add_message(conversation.id, "user", "hello again")
    assert edited.parent_id is None and store.versions_of(original.id) == [original.id, edited.id]
    assert [m.content for m in store.messages(conversation.id)] == ["hello again"]


def test_conversations_of_an_older_schema_become_one_branch(tmp_path):
    from tui.store import _split_sql

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        for statement in _split_sql(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO conversations (title, model, created_at, updated_at) VALUES ('old', 'm', 0, 0)")
    for index, role in enumerate(("user", "assistant", "user", "assistant")):
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, ?, ?, 0)", (role, str(index))
        )
    db.commit()
    db.close()
    store = Store(path)
    try:
        messages = store.messages(1)
        assert [m.content for m in messages] == ["0", "1", "2", "3"]
        assert [m.parent_id for m in messages] == [None, 1, 2, 3]
        store.add_message(1, "user", "new")
        assert [m.content for m in store.messages(1)][-1] == "new"
    finally:
        store.close()


def test_preferences(store):
    assert store.preference("theme") is None
    store.set_preference("theme", "zoo-savanna")
    store.set_preference("theme", "nord")
    assert store.preference("theme") == "nord"


@pytest.mark.slow  # over 2 CPU-seconds: twenty `zootui list` processes
def test_first_starts_at_once_migrate_once_and_all_succeed(tmp_path, cli_env):
    # Four `zootui list` on a fresh data dir, five times: each used to race the others to create the tables.
    for round_ in range(5):
        data = tmp_path / f"data-{round_}"
        env = {**cli_env, "ZOOTUI_DATA_DIR": str(data)}
        starts = [
            subprocess.Popen(zootui_command("list"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        outcomes = [(start.wait(timeout=60), start.stderr.read()) for start in starts]
        for start in starts:
            start.stdout.close()
            start.stderr.close()
        assert outcomes == [(0, "")] * 4
        store = Store(data / DATABASE_NAME)
        assert store.schema_version() == SCHEMA_VERSION
        store.close()


def test_a_new_file_another_connection_is_writing_is_waited_for(tmp_path):
    # The deterministic form of the race of the test above: SQLite answers the switch to WAL "busy" at once, whatever the
    # busy timeout, while another connection holds the write lock of a file still in rollback mode.
    path = tmp_path / DATABASE_NAME
    sqlite3.connect(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, ["ROLLBACK"])
    release.start()
    try:
        store = Store(path)
        assert store.schema_version() == SCHEMA_VERSION
        store.close()
    finally:
        release.join()
        holder.close()


def test_only_a_database_that_is_unusable_is_advised_to_be_moved_aside(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="not a usable zootui database .* move it aside"):
        Store(garbage)

    busy = tmp_path / "busy.sqlite3"
    Store(busy).close()
    monkeypatch.setattr(tui.store, "BUSY_TIMEOUT_MS", 200)  # the same refusal, sooner than the real wait
    holder = sqlite3.connect(busy, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another zootui in the middle of a write
    try:
        with pytest.raises(StoreError, match="is busy") as failure:
            Store(busy)
        assert "move it aside" not in str(failure.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
