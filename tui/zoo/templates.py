"""Prompt formats of the seed zoo: one Jinja chat template per family.

Each template (``templates/<file>.jinja``) is what the converter writes into a GGUF as
``tokenizer.chat_template``, so llama-cpp-python's ``Jinja2ChatFormatter`` applies it. Rendering
here goes through that formatter's bounded twin (``tui.zoo.bounded_jinja``: a template from a model
file may loop or build strings without end), so a prompt previewed in zootui is byte for byte the
text llama-cpp-python builds.

Conventions shared by every template:

- A leading ``system`` message replaces the family's default system text; families without one
  put it where the authors put a preamble (documented at the top of each template).
- Formats published for a single turn continue later turns in the layout of a training example;
  the template says when that layout is zootui's reading rather than the authors' text.
- llama-cpp-python never adds BOS to a templated prompt, so families whose tokenizer starts every
  prompt with BOS get ``{{ bos_token }}`` prepended (``PromptFormat.bos_prefix``).

Tokenizing: llama-cpp-python's chat path tokenizes the whole rendered prompt with
``special=True``, which turns control-token text typed by a user (``<|im_end|>``, ``</s>``, …) into
real control tokens. ``PromptTokenizer`` builds the same token ids llama.cpp would, except that
text coming from messages is never parsed for control tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# llama_cpp is imported where it is used: loading its shared library takes about half a second,
# which listing the catalog (it imports this module for the format names) should not pay.

Message = Mapping[str, str]

_BOS_PREFIX = "{{- bos_token -}}\n"

IMAGE_SLOT = "<ImageHere>"
"""What a template writes where a message's image goes (a message with an ``image`` key): MiniGPT-4's
placeholder, which its ``get_context_emb`` cuts the prompt at to put the image's vectors there. Only
template text counts; the same characters typed in a message stay text."""


@dataclass(frozen=True)
class PromptFormat:
    """How one family of models expects a conversation to be laid out."""

    family: str
    template_file: str
    """Stem of the Jinja file under ``tui/zoo/templates/``; shared by families that differ only in BOS."""
    bos_prefix: bool
    """Prepend BOS: the family's tokenizer starts every prompt with it (LLaMA SentencePiece does)."""
    stop: tuple[str, ...] = ()
    """Stop strings besides the end-of-turn token."""
    eos: str | None = None
    """Text of the token that ends an answer when it is not the tokenizer's own EOS; the converter
    writes its id as ``tokenizer.ggml.eos_token_id`` (Dolly ends answers with ``### End``)."""
    reply_replacements: tuple[tuple[str, str], ...] = ()
    """(model text, shown text) pairs the engine applies to replies: what the authors' post-processing
    turns back (ChatYuan writes newlines and tabs as backslash escapes, two spaces as ``%20``)."""

    @property
    def template(self) -> str:
        """The Jinja chat template to write into the GGUF."""
        return _template_source(self.template_file, self.bos_prefix)


@cache
def _template_source(template_file: str, bos_prefix: bool) -> str:
    body = resources.files(__package__).joinpath(f"templates/{template_file}.jinja").read_text("utf-8")
    return _BOS_PREFIX + body if bos_prefix else body


# ChatYuan's README postprocess(): the reverse of the template's escaping, plus "%20" for two spaces.
CHATYUAN_REPLY = (("\\n", "\n"), ("\\t", "\t"), ("%20", "  "))

FORMATS: dict[str, PromptFormat] = {
    f.family: f
    for f in (
        PromptFormat("chatyuan", "chatyuan", bos_prefix=False, reply_replacements=CHATYUAN_REPLY),
        PromptFormat("chatyuan_llama", "chatyuan", bos_prefix=True, reply_replacements=CHATYUAN_REPLY),
        PromptFormat("vicuna_v0", "vicuna_v0", bos_prefix=True, stop=("###",)),
        PromptFormat("vicuna_v1.1", "vicuna_v1.1", bos_prefix=True),
        PromptFormat("chinese_vicuna_chat", "chinese_vicuna_chat", bos_prefix=True, stop=("###", "User")),
        PromptFormat("minigpt4", "minigpt4", bos_prefix=True, stop=("###",)),
        PromptFormat("coati", "coati", bos_prefix=True, stop=("###", "instruction:", "Instruction:")),
        PromptFormat("chatglm", "chatglm", bos_prefix=False, eos="<eop>"),
        PromptFormat("chatglm2", "chatglm2", bos_prefix=False),
        PromptFormat("chatglm3", "chatglm3", bos_prefix=False, stop=("<|user|>", "<|observation|>")),
        PromptFormat("alpaca", "alpaca", bos_prefix=True),
        PromptFormat("alpaca_lora", "alpaca_lora", bos_prefix=True),
        PromptFormat("openchatkit", "openchatkit", bos_prefix=False, stop=("<human>",)),
        # A classifier: the answer is one label on one line (see tui/moderation.py).
        PromptFormat("openchatkit_moderation", "openchatkit_moderation", bos_prefix=False, stop=("\n",)),
        PromptFormat("belle", "belle", bos_prefix=False),
        PromptFormat("belle_llama", "belle", bos_prefix=True),
        PromptFormat("dolly", "dolly", bos_prefix=False, eos="### End"),
        PromptFormat("robin", "robin", bos_prefix=True, stop=("###",)),
        PromptFormat("baize", "baize", bos_prefix=True, stop=("[|Human|]", "[|AI|]")),
        PromptFormat("koala", "koala", bos_prefix=True),
        # Each packed training example was "<s>Question: …\n\nAnswer: …</s>": the template places BOS itself.
        PromptFormat("stackllama", "stackllama", bos_prefix=False),
        PromptFormat("deepspeed_chat", "deepspeed_chat", bos_prefix=True, stop=("Human: ",)),
        PromptFormat("phoenix", "phoenix", bos_prefix=False),
        PromptFormat("chimera", "phoenix", bos_prefix=True),
        PromptFormat("oasst_pythia", "oasst", bos_prefix=False),
        PromptFormat("oasst_llama", "oasst", bos_prefix=True),
    )
}


def prompt_format(family: str) -> PromptFormat:
    """The format named ``family``; ValueError with the known names if there is none."""
    try:
        return FORMATS[family]
    except KeyError:
        raise ValueError(f"unknown prompt format {family!r}; known: {', '.join(sorted(FORMATS))}") from None


@cache
def _formatter(template: str, bos_token: str, eos_token: str, add_generation_prompt: bool) -> Jinja2ChatFormatter:
    from tui.zoo.bounded_jinja import BoundedChatFormatter

    return BoundedChatFormatter(
        template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=add_generation_prompt
    )


def render_template(
    template: str,
    messages: Sequence[Message],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Render ``template`` exactly as llama-cpp-python does for a GGUF carrying it, within the limits of
    ``tui.zoo.bounded_jinja`` (a ``jinja2.TemplateError`` when the template breaks one, or does not compile)."""
    formatter = _formatter(template, bos_token, eos_token, add_generation_prompt)
    # llama-cpp-python types messages as its OpenAI TypedDicts; any role/content mapping renders.
    return formatter(messages=cast(Any, [dict(m) for m in messages])).prompt


def render_prompt(
    family: str,
    messages: Sequence[Message],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """The exact text a model of ``family`` receives for an OpenAI-style message list."""
    return render_template(prompt_format(family).template, messages, bos_token, eos_token, add_generation_prompt)


# Private-use code points that bracket message text while rendering, so the rendered prompt can be
# cut back into template text and message text. They are removed from messages beforehand.
_TEXT_OPEN, _TEXT_CLOSE = "\ue000", "\ue001"
_MESSAGE_TEXT = re.compile(f"{_TEXT_OPEN}(.*?){_TEXT_CLOSE}", re.DOTALL)


@dataclass(frozen=True)
class PromptPart:
    """A stretch of rendered prompt: template text, or text that came from a message."""

    text: str
    from_message: bool


def render_parts(
    template: str,
    messages: Sequence[Message],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> list[PromptPart]:
    """Render like ``render_template`` but keep apart the text that came from messages.

    Template filters (ChatYuan's newline escaping) still apply to message text. Raises ValueError
    when a template moves text across a message's edges, which would make the parts ambiguous.
    """
    cleaned = [{**m, "content": m["content"].replace(_TEXT_OPEN, "").replace(_TEXT_CLOSE, "")} for m in messages]
    marked = [{**m, "content": _TEXT_OPEN + m["content"] + _TEXT_CLOSE} for m in cleaned]
    rendered = render_template(template, marked, bos_token, eos_token, add_generation_prompt)
    parts: list[PromptPart] = []
    for index, piece in enumerate(_MESSAGE_TEXT.split(rendered)):
        if piece:
            parts.append(PromptPart(piece, from_message=index % 2 == 1))
    plain = render_template(template, cleaned, bos_token, eos_token, add_generation_prompt)
    if "".join(p.text for p in parts) != plain:
        raise ValueError("the chat template changes text at the edge of a message; cannot tell message text apart")
    return parts


class PromptTokenizer:
    """Tokenize prompts for one loaded model so that message text never becomes control tokens.

    llama.cpp splits text at every special-token string (control, user-defined and unknown
    tokens, longest first) and tokenizes the stretches between them. This does the same for
    template text, while message text only joins the plain stretches, which are tokenized with
    ``special=False``. Without special strings in messages the ids equal llama.cpp's own
    ``tokenize(prompt, special=True)``.

    Limitation (llama.cpp's, not ours to lift): ``special=False`` still matches user-defined
    tokens, so a converter should mark role tokens such as ``<|assistant|>`` as control tokens.
    """

    def __init__(self, llama: Llama) -> None:
        import llama_cpp

        special_attrs = (
            llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
            | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        )
        vocab = llama_cpp.llama_model_get_vocab(llama.model)

        def token_text(token: int) -> str:
            return llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace")

        specials = [
            (token_text(token), token)
            for token in range(llama_cpp.llama_vocab_n_tokens(vocab))
            if llama_cpp.llama_vocab_get_attr(vocab, token) & special_attrs
        ]
        self._specials = sorted((s for s in specials if s[0]), key=lambda s: len(s[0]), reverse=True)
        self._llama = llama
        # As llama-cpp-python does when it wraps a GGUF's template: a missing token is an empty string.
        self.bos_token = token_text(llama.token_bos()) if llama.token_bos() != -1 else ""
        self.eos_token = token_text(llama.token_eos()) if llama.token_eos() != -1 else ""

    def tokenize(self, template: str, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the prompt ``template`` renders for ``messages``, message text kept plain."""
        return self.tokenize_around(template, messages, None, add_generation_prompt)[0]

    def tokenize_around(
        self, template: str, messages: Sequence[Message], slot: str | None, add_generation_prompt: bool = True
    ) -> list[list[int]]:
        """Like ``tokenize``, cut where the template's own text holds ``slot`` (left out): one more
        segment than slots. Each segment is tokenized on its own, as MiniGPT-4 tokenizes the pieces
        around its image placeholder."""
        parts = render_parts(template, messages, self.bos_token, self.eos_token, add_generation_prompt)
        pieces: list[str | int | None] = []  # None marks a cut
        for part in parts:
            if part.from_message:
                pieces.append(part.text)
                continue
            for index, stretch in enumerate(part.text.split(slot) if slot else [part.text]):
                if index:
                    pieces.append(None)
                pieces.extend(self._split_specials(stretch))
        segments: list[list[int]] = [[]]
        plain = ""
        for piece in pieces:
            if isinstance(piece, str):
                plain += piece
                continue
            segments[-1].extend(self._tokenize_plain(plain))
            plain = ""
            if piece is None:
                segments.append([])
            else:
                segments[-1].append(piece)
        segments[-1].extend(self._tokenize_plain(plain))
        return segments

    def _tokenize_plain(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _split_specials(self, text: str) -> list[str | int]:
        """Cut template text at special-token strings, longest first, as llama.cpp's partitioner does."""
        pieces: list[str | int] = [text]
        for special, token in self._specials:
            split: list[str | int] = []
            for piece in pieces:
                if isinstance(piece, int) or special not in piece:
                    split.append(piece)
                    continue
                for index, stretch in enumerate(piece.split(special)):
                    if index:
                        split.append(token)
                    if stretch:
                        split.append(stretch)
            pieces = split
        return pieces
