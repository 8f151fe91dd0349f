import threading

import pytest

from tui.chat import DEFAULT_TITLE, ChatService
from tui.engine import EngineError, Engines
from tui.store import Store


@pytest.fixture
def service(fast_settings, isolated_dirs):
    store = Store(isolated_dirs / "zootui.sqlite3")
    engines = Engines(fast_settings, isolated_dirs)
    yield ChatService(store, fast_settings, engines)
    engines.close()
    store.close()


@pytest.mark.slow  # loads the real default model
def test_a_reply_is_saved_with_its_figures(service):
    conversation = service.new_conversation(system_prompt="You are terse.")
    assert conversation.title == DEFAULT_TITLE
    service.add_user_message(conversation, "What colour is the sky?")
    streamed = []
    reply = service.reply(conversation, threading.Event(), streamed.append)
    assert "".join(streamed) == reply.message.content != ""
    [user, assistant] = service.store.messages(conversation.id)
    assert (user.role, assistant.role, assistant.state) == ("user", "assistant", "done")
    assert assistant.content == reply.message.content
    assert assistant.stats["completion_tokens"] == reply.stats.completion_tokens
    assert service.store.conversation(conversation.id).title == "What colour is the sky?"


def test_history_has_the_system_prompt_first_and_skips_failed_replies(service):
    conversation = service.new_conversation(system_prompt="Be kind.")
    service.add_user_message(conversation, "hi")
    service.store.add_message(conversation.id, "assistant", "broken half", state="error")
    assert service.history(service.store.conversation(conversation.id)) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.slow  # loads the real default model
def test_stopped_reply_keeps_its_text(service):
    conversation = service.new_conversation()
    service.add_user_message(conversation, "Write a long story about a zoo keeper.")
    cancel = threading.Event()
    chunks = []

    def stop_after_a_few(text):
        chunks.append(text)
        if len(chunks) == 4:
            cancel.set()

    service.store.update_conversation(conversation.id, params={**conversation.params, "max_tokens": 200})
    reply = service.reply(conversation, cancel, stop_after_a_few)
    saved = service.store.messages(conversation.id)[-1]
    assert saved.state == "stopped" and saved.content == reply.message.content == "".join(chunks)


@pytest.mark.slow  # loads the real default model
def test_regenerate_keeps_the_earlier_reply_as_a_version(service):
    conversation = service.new_conversation()
    service.add_user_message(conversation, "Say a number.")
    first = service.reply(conversation, threading.Event()).message
    service.prepare_regenerate(conversation)
    assert [m.role for m in service.messages(conversation)] == ["user"]
    second = service.reply(conversation, threading.Event()).message
    shown = service.messages(conversation)
    assert [m.id for m in shown][-1] == second.id != first.id
    assert (shown[-1].version, shown[-1].versions) == (2, 2)
    earlier = service.switch_version(conversation, second.id, -1)
    assert [m.id for m in earlier][-1] == first.id and earlier[-1].version == 1
    assert service.switch_version(conversation, first.id, -1) is None, "there is no version before the first"
    assert service.history(conversation)[-1]["content"] == first.content, "the model continues from the one shown"


@pytest.mark.slow  # loads the real default model
def test_edit_and_resend_keeps_the_old_exchange_as_a_version(service):
    conversation = service.new_conversation()
    original = service.add_user_message(conversation, "Hello")
    service.reply(conversation, threading.Event())
    edited = service.edit_last_user_message(conversation, "Hello again")
    assert [(m.role, m.content) for m in service.messages(conversation)] == [("user", "Hello again")]
    back = service.switch_version(conversation, edited.id, -1)
    assert [m.role for m in back] == ["user", "assistant"] and back[0].id == original.id


@pytest.mark.slow  # loads the real default model
def test_a_reply_stopped_before_its_first_token_leaves_nothing(service):
    conversation = service.new_conversation()
    service.add_user_message(conversation, "Hi")
    first = service.reply(conversation, threading.Event()).message
    service.prepare_regenerate(conversation)
    cancel = threading.Event()
    cancel.set()
    reply = service.reply(conversation, cancel)
    assert reply.message.content == "" and reply.message.state == "stopped"
    assert [m.id for m in service.messages(conversation)][-1] == first.id, "the earlier version shows again"


def test_regenerate_without_a_message_is_a_clear_error(service):
    with pytest.raises(EngineError, match="send a message first"):
        service.prepare_regenerate(service.new_conversation())


def test_engine_error_leaves_no_empty_reply_behind(service, tmp_path):
    conversation = service.new_conversation(model=str(tmp_path / "missing.gguf"))
    service.add_user_message(conversation, "hi")
    with pytest.raises(EngineError):
        service.reply(conversation, threading.Event())
    assert [m.role for m in service.store.messages(conversation.id)] == ["user"]


@pytest.mark.slow  # loads the real default model
def test_a_regenerate_that_fails_before_its_first_token_shows_the_earlier_reply_again(service, tmp_path):
    conversation = service.new_conversation()
    service.add_user_message(conversation, "Say a number.")
    first = service.reply(conversation, threading.Event()).message
    service.prepare_regenerate(conversation)
    conversation = service.update(conversation, model=str(tmp_path / "deleted.gguf"))
    with pytest.raises(EngineError):
        service.reply(conversation, threading.Event())
    assert [m.id for m in service.messages(conversation)][-1] == first.id


def test_closing_an_empty_conversation_deletes_it_and_keeps_one_with_messages(service):
    empty = service.new_conversation()
    assert service.close_conversation(empty.id) is True
    assert empty.id not in [c.id for c in service.store.conversations()]
    used = service.new_conversation()
    service.add_user_message(used, "Hello")
    assert service.close_conversation(used.id) is False
    [kept] = service.store.conversations()
    assert (kept.id, kept.is_open) == (used.id, False)


def test_a_request_that_never_reached_a_model_is_undone(service):
    conversation = service.new_conversation(model="nosuchmodel")
    request = service.add_user_message(conversation, "Hello")
    with pytest.raises(EngineError):
        service.reply(conversation, threading.Event())
    assert service.forget_request(conversation, request, None) is True
    assert service.store.conversations() == []
