"""llama.cpp's tokenizer, reading each converted GGUF, gives exactly the source tokenizer's ids."""

from __future__ import annotations

import pytest
from conftest import MODEL_VARIANTS, reference

from tui.zoo.templates import PromptTokenizer, prompt_format

# Fixtures whose reference holds whole conversations, with the prompt format that lays them out.
CHAT_FORMATS = {"chatglm2": "chatglm2", "chatglm3": "chatglm3"}


@pytest.fixture
def vocab_only(converted):
    from llama_cpp import Llama

    opened = []

    def load(variant: str) -> Llama:
        llm = Llama(model_path=str(converted(variant, "f16")), vocab_only=True, verbose=False)
        opened.append(llm)
        return llm

    yield load
    for llm in opened:
        llm.close()


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_llama_cpp_tokenizes_like_the_source_tokenizer(vocab_only, variant):
    _, _, probes = reference(variant)
    llm = vocab_only(variant)
    mismatches = []
    for probe in probes["probes"]:
        ids = llm.tokenize(probe["text"].encode("utf-8"), add_bos=probes["add_bos"], special=False)
        if ids != probe["ids"]:
            mismatches.append((probe["text"], ids, probe["ids"]))
    assert not mismatches


@pytest.mark.parametrize("variant", ["chatglm3"])
def test_special_token_strings_become_the_command_tokens(vocab_only, variant):
    """ChatGLM3's tokenize(encode_special_tokens=True): [gMASK], sop, role tokens … anywhere in the text."""
    probes = reference(variant)[2]["special_probes"]
    llm = vocab_only(variant)
    assert probes
    for probe in probes:
        assert llm.tokenize(probe["text"].encode("utf-8"), add_bos=False, special=True) == probe["ids"], probe["text"]


@pytest.mark.parametrize(("variant", "family"), CHAT_FORMATS.items())
def test_prompt_format_tokenizes_conversations_as_the_model_s_own_tokenizer(vocab_only, variant, family):
    """The zoo's prompt format, tokenized by the engine, equals ChatGLM's build_prompt / build_chat_input ids,
    Chinese and English mixed and special-token strings in messages kept as text."""
    chats = reference(variant)[2]["chats"]
    tokenizer = PromptTokenizer(vocab_only(variant))
    assert chats
    for chat in chats:
        assert tokenizer.tokenize(prompt_format(family).template, chat["messages"]) == chat["ids"], chat["messages"]


def test_chatglm3_turns_end_at_eos_user_and_observation(vocab_only):
    """ChatGLM3's chat() stops at </s>, <|user|> and <|observation|>; those are control tokens that print
    nothing, so no stop string could catch them: llama.cpp must see them as end of generation."""
    import llama_cpp

    llm = vocab_only("chatglm3")
    vocab = llm._model.vocab
    ending = {token for token in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, token)}
    assert ending == {2, *llm.tokenize(b"<|user|><|observation|>", add_bos=False, special=True)}
