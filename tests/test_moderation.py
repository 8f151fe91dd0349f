"""A conversation's moderation model: each user message is classified first, and a label that needs
intervention holds the reply until the user sends it anyway (OpenChatKit's GPT-JT-Moderation-6B).

The moderators are tiny GPT-J-shaped models that answer the label each test chooses
(tests/moderator.py); they and the chat model (the tiny GPT-J fixture as Dolly v1) are converted
and run by llama.cpp.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from moderator import SAMPLE_MESSAGE, install_chat_model, install_moderator

from tui.chat import ChatService, ReplyHeld
from tui.engine import EngineError, Engines
from tui.export import to_json
from tui.moderation import OPENCHATKIT, Moderation, moderators
from tui.store import DATABASE_NAME, Store
from tui.zoo.library import library_models
from tui.zoo.templates import render_prompt


@pytest.fixture
def chat(isolated_dirs: Path, fast_settings):
    store = Store(isolated_dirs / DATABASE_NAME)
    engines = Engines(fast_settings, isolated_dirs)
    yield ChatService(store, fast_settings, engines)
    engines.close()
    store.close()


def moderated_conversation(service: ChatService, moderator: str):
    conversation = service.new_conversation(model=install_chat_model(service.engines.data_dir))
    return service.store.update_conversation(conversation.id, moderation_model=moderator)


@pytest.mark.slow
def test_a_casual_message_is_labelled_then_answered(chat: ChatService, isolated_dirs: Path, tmp_path: Path):
    moderator = install_moderator(isolated_dirs, "casual", tmp_path)
    conversation = moderated_conversation(chat, moderator)
    chat.add_user_message(conversation, SAMPLE_MESSAGE)
    seen: list[Moderation] = []
    reply = chat.reply(conversation, threading.Event(), on_moderated=seen.append)
    assert seen == [Moderation(moderator, "casual", "casual", held=False)]
    assert reply.message.content and reply.message.state == "done"
    user, answer = chat.store.messages(conversation.id)
    assert user.moderation == seen[0].to_dict() and answer.moderation is None
    assert chat.held(conversation) is None


@pytest.mark.slow
def test_needs_intervention_holds_the_reply_until_sent_anyway(chat: ChatService, isolated_dirs: Path, tmp_path):
    moderator = install_moderator(isolated_dirs, "needs intervention", tmp_path)
    conversation = moderated_conversation(chat, moderator)
    chat.add_user_message(conversation, SAMPLE_MESSAGE)
    with pytest.raises(ReplyHeld, match="'needs intervention'") as held:
        chat.reply(conversation, threading.Event())
    assert held.value.moderation == Moderation(moderator, "needs intervention", "needs intervention", held=True)
    assert [m.role for m in chat.store.messages(conversation.id)] == ["user"]  # nothing was generated
    assert chat.held(conversation) == held.value.moderation
    with pytest.raises(ReplyHeld):  # regenerating does not get round it
        chat.reply(conversation, threading.Event())

    chat.send_anyway(conversation)
    reply = chat.reply(conversation, threading.Event())
    assert reply.message.state == "done" and chat.held(conversation) is None
    user = chat.store.messages(conversation.id)[0]
    assert user.moderation == {**held.value.moderation.to_dict(), "held": False}  # the label stays
    with pytest.raises(EngineError, match="no reply is held"):
        chat.send_anyway(conversation)
    exported = json.loads(
        to_json(chat.store.conversation(conversation.id), chat.store.messages(conversation.id), isolated_dirs)
    )
    assert exported["moderation_model"] == moderator
    assert exported["messages"][0]["moderation"]["label"] == "needs intervention"


@pytest.mark.slow
def test_an_answer_that_is_no_label_is_shown_and_holds_nothing(chat: ChatService, isolated_dirs: Path, tmp_path):
    moderator = install_moderator(isolated_dirs, "zoo", tmp_path)
    conversation = moderated_conversation(chat, moderator)
    chat.add_user_message(conversation, SAMPLE_MESSAGE)
    seen: list[Moderation] = []
    chat.reply(conversation, threading.Event(), on_moderated=seen.append)
    assert seen == [Moderation(moderator, None, "zoo", held=False)]
    assert seen[0].summary() == "moderation: unrecognised answer 'zoo'"


@pytest.mark.slow
def test_only_moderation_models_moderate(chat: ChatService, isolated_dirs: Path, tmp_path: Path):
    moderator = install_moderator(isolated_dirs, "casual", tmp_path)
    conversation = moderated_conversation(chat, chat.settings.chat.default_model)
    assert moderators(library_models(isolated_dirs)) == [moderator]  # not the chat models
    chat.add_user_message(conversation, SAMPLE_MESSAGE)
    with pytest.raises(EngineError, match="is not a moderation model"):
        chat.reply(conversation, threading.Event())


def test_without_a_moderation_model_nothing_is_classified(chat: ChatService):
    conversation = chat.new_conversation()
    chat.add_user_message(conversation, SAMPLE_MESSAGE)
    assert chat.moderate(conversation, threading.Event()) is None and chat.held(conversation) is None


def test_the_prompt_lists_the_labels_the_answer_is_read_against():
    prompt = render_prompt("openchatkit_moderation", [{"role": "user", "content": "hi"}], "", "<|endoftext|>")
    listed = prompt.split("\n\n")[0].splitlines()[1:]
    assert listed == [f"{n}. {label}" for n, label in enumerate(OPENCHATKIT.labels, start=1)]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("needs intervention", "needs intervention"),
        ("  Needs Caution \n\nInput: more", "needs caution"),
        ("casual\n", "casual"),
        ("casually", None),
        ("", None),
        ("\n\nnot a label", None),
    ],
)
def test_the_answer_s_first_line_is_the_label(answer, label):
    assert OPENCHATKIT.label_of(answer) == label


@given(st.text())
def test_any_answer_gives_a_label_or_none(answer):
    assert OPENCHATKIT.label_of(answer) in (None, *OPENCHATKIT.labels)
