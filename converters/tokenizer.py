"""Turns a checkpoint's tokenizer files into the GGUF tokenizer keys llama.cpp reads.

Three families are supported: SentencePiece BPE `tokenizer.model` (LLaMA), SentencePiece Unigram
`spiece.model` (T5, ChatYuan; llama.cpp's "t5" tokenizer, with the model's precompiled normalisation
charsmap), both parsed here from their protobuf so `sentencepiece` is not needed, and byte-level BPE
`tokenizer.json` (GPT-NeoX, BLOOM). Added tokens
come from `added_tokens.json` and `tokenizer_config.json`; special ids are resolved from the tokenizer
files first and from `config.json` last, because 2023 configs often carry stale ids.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from .errors import ConversionError
from .jsonfile import (
    BOOL,
    LARGE_JSON_BYTES,
    NULL,
    SMALL_JSON_BYTES,
    STR,
    Arr,
    Int,
    Map,
    Num,
    Obj,
    OneOf,
    Schema,
    Tup,
    check,
    read_bounded,
    read_json,
    read_text,
)

SPECIAL_KINDS = ("bos", "eos", "unk", "pad")
_ADDED_TOKEN_SCORE = -1000.0  # below every real piece, so merges never produce an added token
_PAD_SCORE = -10000.0
# BLOOM's pre-tokenizer regex splits on this punctuation; llama.cpp ships the same regex as pre "bloom".
_BLOOM_SPLIT_MARK = "。，、"


@dataclass(frozen=True)
class TokenizerHints:
    """What a model family's tokenizer code does that none of its data files says."""

    appended_controls: tuple[str, ...] = ()
    """Control tokens whose ids follow the SentencePiece pieces, in order (ChatGLM's [gMASK], sop …)."""
    add_bos: bool | None = None
    """Whether prompts start with BOS; None to follow tokenizer_config.json."""
    special_tokens: Mapping[str, str] = field(default_factory=dict)
    """GGUF special-token kind (eot, eom …) -> the token's text."""


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece BPE), "t5" (SentencePiece Unigram) or "gpt2" (byte-level BPE)
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    remove_extra_whitespaces: bool | None = None
    precompiled_charsmap: bytes | None = None
    chat_template: str | None = None

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.remove_extra_whitespaces is not None:
            writer.add_remove_extra_whitespaces(self.remove_extra_whitespaces)
        if self.precompiled_charsmap:
            writer.add_precompiled_charsmap(self.precompiled_charsmap)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


# --- SentencePiece model protobuf -------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of a protobuf message; values of unknown wire types stop the parse."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


SENTENCEPIECE_UNIGRAM, SENTENCEPIECE_BPE = 1, 2  # TrainerSpec.model_type
# What a SentencePiece file is when its trainer spec does not say, by the name checkpoints give it.
_DEFAULT_MODEL_TYPES = {"tokenizer.model": SENTENCEPIECE_BPE, "spiece.model": SENTENCEPIECE_UNIGRAM}


@dataclass
class SentencePieceModel:
    pieces: list[str]
    scores: list[float]
    types: list[int]  # SentencePiece's type enum equals gguf.TokenType (1 normal … 6 byte)
    special_ids: dict[str, int]  # from the trainer spec; -1 means none
    add_dummy_prefix: bool
    model_type: int | None = None  # None when the file does not say (the protobuf default is Unigram)
    remove_extra_whitespaces: bool = True
    precompiled_charsmap: bytes = b""


# SentencePiece's token types equal gguf.TokenType: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
_PIECE_TYPES = range(1, 7)


def _expect(value: int | bytes, wire_type: type, what: str) -> int | bytes:
    """A protobuf field's value, if it has the wire type its field number has in sentencepiece_model.proto."""
    if not isinstance(value, wire_type):
        raise ValueError(f"{what} has the wrong wire type")
    return value


def read_sentencepiece(path: Path) -> SentencePieceModel:
    pieces, scores, types = [], [], []
    special_ids = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}  # the trainer's defaults
    add_dummy_prefix = remove_extra_whitespaces = True
    model_type, charsmap = None, b""
    try:
        for number, value in _fields(read_bounded(path, LARGE_JSON_BYTES)):
            if number == 1:  # ModelProto.pieces: SentencePiece {piece=1, score=2, type=3}
                piece, score, kind = "", 0.0, 1
                for sub, sub_value in _fields(_expect(value, bytes, "a piece")):
                    if sub == 1:
                        piece = _expect(sub_value, bytes, "a piece's text").decode("utf-8")
                    elif sub == 2:
                        score = struct.unpack("<f", _expect(sub_value, bytes, "a piece's score"))[0]
                    elif sub == 3:
                        kind = _expect(sub_value, int, "a piece's type")
                if kind not in _PIECE_TYPES or not math.isfinite(score):
                    raise ValueError(f"piece {len(pieces)} has type {kind} and score {score}")
                pieces.append(piece)
                scores.append(score)
                types.append(kind)
            elif number == 2:  # TrainerSpec: model_type=3, unk_id=40, bos_id=41, eos_id=42, pad_id=43
                for sub, sub_value in _fields(_expect(value, bytes, "the trainer spec")):
                    kind = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}.get(sub)
                    if kind:
                        special_ids[kind] = _int32(_expect(sub_value, int, f"the {kind} id"))
                    elif sub == 3:
                        model_type = _expect(sub_value, int, "the model type")
            elif number == 3:  # NormalizerSpec: precompiled_charsmap=2, add_dummy_prefix=3, remove_extra_whitespaces=4
                for sub, sub_value in _fields(_expect(value, bytes, "the normalizer spec")):
                    if sub == 2:
                        charsmap = bytes(_expect(sub_value, bytes, "the precompiled charsmap"))
                    elif sub == 3:
                        add_dummy_prefix = bool(_expect(sub_value, int, "add_dummy_prefix"))
                    elif sub == 4:
                        remove_extra_whitespaces = bool(_expect(sub_value, int, "remove_extra_whitespaces"))
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ConversionError(f"{path} is not a valid SentencePiece model ({exc}); re-download it") from None
    if not pieces:
        raise ConversionError(f"{path} holds no SentencePiece pieces; re-download it")
    return SentencePieceModel(
        pieces, scores, types, special_ids, add_dummy_prefix, model_type, remove_extra_whitespaces, charsmap
    )


# --- helpers shared by both families ----------------------------------------------------------


# The fields of the tokenizer files that the converter reads, in every form real checkpoints carry them.
_TOKEN_ID = Int(minimum=0)
ADDED_TOKENS_JSON = Map(_TOKEN_ID)  # {text: id}
_PRE_TOKENIZER_STEP = Obj(
    {"type": STR, "pattern": Obj({"Regex": STR, "String": STR}), "individual_digits": BOOL, "use_regex": BOOL}
)
TOKENIZER_JSON = Obj(
    {
        "model": Obj(
            {
                "type": STR,
                # BPE and WordPiece map text to ids; Unigram lists [piece, score] pairs.
                "vocab": OneOf(Map(_TOKEN_ID), Arr(Tup(STR, Num()))),
                # "a b" strings, or [a, b] pairs as tokenizers writes since transformers 4.45.
                "merges": Arr(OneOf(STR, Tup(STR, STR))),
            }
        ),
        "added_tokens": Arr(Obj({"id": _TOKEN_ID, "content": STR, "special": BOOL}, required=("id", "content"))),
        "pre_tokenizer": OneOf(NULL, Obj({**_PRE_TOKENIZER_STEP.fields, "pretokenizers": Arr(_PRE_TOKENIZER_STEP)})),
        "post_processor": OneOf(NULL, Obj({"single": Arr(Obj({}))})),
    }
)
TOKENIZER_CONFIG_JSON = Obj(
    {
        "added_tokens_decoder": Map(Obj({"content": STR, "special": BOOL}), integer_keys=True),
        "add_bos_token": OneOf(BOOL, NULL),
        "add_eos_token": OneOf(BOOL, NULL),
        # One template, or named templates ([{"name", "template"}]), which the converter does not pick from.
        "chat_template": OneOf(STR, NULL, Arr(Obj({"name": STR, "template": STR}))),
    }
)
SPECIAL_TOKENS_MAP_JSON = Obj({})  # entries are text or AddedToken objects; `_token_text` reads either


def _read_json(path: Path, schema: Schema, max_bytes: int = SMALL_JSON_BYTES) -> dict:
    """The file checked against schema through the shared JSON reader, or {} when the checkpoint has none."""
    return read_json(path, schema, max_bytes) if path.is_file() else {}


def _token_text(entry) -> str | None:
    """A special-token entry is either the text or an AddedToken dict with 'content'."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<s>", "</s>", "<unk>", "<pad>", "<mask>")


class _TokenTable:
    """The id-indexed token list being assembled, padded to the model's embedding rows."""

    def __init__(self, n_vocab: int, source: str) -> None:
        self.n_vocab = n_vocab
        self.source = source
        self.tokens: list[str | None] = [None] * n_vocab
        self.types = [gguf.TokenType.UNUSED] * n_vocab
        self.scores = [_PAD_SCORE] * n_vocab

    def set(self, token_id: int, text: str, kind: int, score: float = 0.0) -> None:
        if not 0 <= token_id < self.n_vocab:
            raise ConversionError(
                f"{self.source} has token {text!r} at id {token_id}, but the model's embedding has only {self.n_vocab} rows;"
                " the tokenizer does not belong to these weights"
            )
        self.tokens[token_id] = text
        self.types[token_id] = kind
        self.scores[token_id] = score

    def finish(self) -> tuple[list[str], list[int], list[float]]:
        tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(self.tokens)]
        return tokens, [int(t) for t in self.types], self.scores

    def ids_by_text(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            if t is not None:
                ids.setdefault(t, i)
        return ids


def _overlay_added_tokens(table: _TokenTable, directory: Path, tokenizer_config: dict) -> None:
    """added_tokens.json ({text: id}) then tokenizer_config.json's added_tokens_decoder ({id: {content, special}})."""
    for text, token_id in _read_json(directory / "added_tokens.json", ADDED_TOKENS_JSON).items():
        kind = gguf.TokenType.CONTROL if _looks_special(text) else gguf.TokenType.USER_DEFINED
        table.set(token_id, text, kind, _ADDED_TOKEN_SCORE)
    for token_id, entry in (tokenizer_config.get("added_tokens_decoder") or {}).items():
        text = _token_text(entry)
        if text is None:
            continue
        index = int(token_id)
        # Keep an existing piece's own type (e.g. SentencePiece's <s> is already CONTROL).
        if index < table.n_vocab and table.tokens[index] == text:
            continue
        special = bool(entry.get("special")) or _looks_special(text)
        kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        table.set(index, text, kind, _ADDED_TOKEN_SCORE)


def _resolve_special_ids(
    table: _TokenTable,
    directory: Path,
    tokenizer_config: dict,
    config: dict,
    fallback: dict[str, int],
    eos_token: str | None,
    kinds: tuple[str, ...] = SPECIAL_KINDS,
) -> dict[str, int]:
    """Special ids from the tokenizer's own files, then the tokenizer model's defaults, then config.json.

    Of ``kinds``, bos and eos must be found.
    """
    special_map = _read_json(directory / "special_tokens_map.json", SPECIAL_TOKENS_MAP_JSON)
    by_text = table.ids_by_text()
    ids: dict[str, int] = {}
    for kind in kinds:
        text = _token_text(tokenizer_config.get(f"{kind}_token")) or _token_text(special_map.get(f"{kind}_token"))
        if kind == "eos" and eos_token is not None:
            if eos_token not in by_text:
                raise ConversionError(
                    f"the requested eos token {eos_token!r} is not in the vocabulary; check its spelling"
                )
            text = eos_token
        candidates = [by_text.get(text) if text else None, fallback.get(kind), config.get(f"{kind}_token_id")]
        for candidate in candidates:
            if isinstance(candidate, int) and 0 <= candidate < table.n_vocab and table.tokens[candidate] is not None:
                ids[kind] = candidate
                break
    for kind in ("bos", "eos"):
        if kind in kinds and kind not in ids:
            raise ConversionError(
                f"cannot tell the {kind} token: no {kind}_token in tokenizer_config.json or special_tokens_map.json"
                f" and no valid {kind}_token_id in config.json; add one of them"
            )
    return ids


def _hinted_special_ids(table: _TokenTable, hints: TokenizerHints) -> dict[str, int]:
    by_text = table.ids_by_text()
    return {kind: by_text[text] for kind, text in hints.special_tokens.items() if text in by_text}


def _chat_template(directory: Path, tokenizer_config: dict, override: str | None) -> str | None:
    if override is not None:
        return _compiled(override, "the chat template given")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, str):
        return _compiled(template, f"{directory / 'tokenizer_config.json'}: chat_template")
    jinja = directory / "chat_template.jinja"
    return _compiled(read_text(jinja), str(jinja)) if jinja.is_file() else None


def _compiled(template: str, source: str) -> str:
    """The template, if llama-cpp-python can compile it: a GGUF whose template does not compile cannot be loaded."""
    import jinja2
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        Jinja2ChatFormatter(template, eos_token="", bos_token="")
    except jinja2.TemplateSyntaxError as error:
        raise ConversionError(
            f"{source} is not a valid Jinja template (line {error.lineno}: {error.message}); fix it or pass --chat-template FILE"
        ) from None
    except (jinja2.TemplateError, RecursionError) as error:
        raise ConversionError(
            f"{source} cannot be compiled ({type(error).__name__}); fix it or pass --chat-template FILE"
        ) from None
    return template


# --- the families -------------------------------------------------------------------------


def _sentencepiece_vocab(
    path: Path,
    n_vocab: int,
    config: dict,
    chat_template: str | None,
    eos_token: str | None,
    hints: TokenizerHints,
) -> Vocab:
    """LLaMA's BPE model (llama.cpp's "llama" tokenizer: BOS first) or T5's Unigram model (its "t5"
    tokenizer: no BOS, EOS after every input, the normalizer's charsmap carried over)."""
    directory = path.parent
    spm = read_sentencepiece(path)
    unigram = (spm.model_type or _DEFAULT_MODEL_TYPES[path.name]) == SENTENCEPIECE_UNIGRAM
    tokenizer_config = _read_json(directory / "tokenizer_config.json", TOKENIZER_CONFIG_JSON)
    table = _TokenTable(n_vocab, path.name)
    for i, (piece, score, kind) in enumerate(zip(spm.pieces, spm.scores, spm.types, strict=False)):
        table.set(i, piece, kind, score)
    for i, text in enumerate(hints.appended_controls, start=len(spm.pieces)):
        table.set(i, text, gguf.TokenType.CONTROL, _ADDED_TOKEN_SCORE)
    _overlay_added_tokens(table, directory, tokenizer_config)
    tokens, types, scores = table.finish()
    add_bos = tokenizer_config.get("add_bos_token") if hints.add_bos is None else hints.add_bos
    add_eos = tokenizer_config.get("add_eos_token")
    kinds = ("eos", "unk", "pad") if unigram else SPECIAL_KINDS
    return Vocab(
        model="t5" if unigram else "llama",
        pre="default",  # llama.cpp does not pre-tokenize SentencePiece vocabularies
        tokens=tokens,
        types=types,
        scores=scores,
        special_ids=_resolve_special_ids(table, directory, tokenizer_config, config, spm.special_ids, eos_token, kinds)
        | _hinted_special_ids(table, hints),
        add_bos=add_bos if isinstance(add_bos, bool) else not unigram,
        add_eos=add_eos if isinstance(add_eos, bool) else unigram,
        add_space_prefix=spm.add_dummy_prefix,
        remove_extra_whitespaces=spm.remove_extra_whitespaces if unigram else None,
        precompiled_charsmap=spm.precompiled_charsmap if unigram else None,
        chat_template=_chat_template(directory, tokenizer_config, chat_template),
    )


def _bpe_pre(tokenizer: dict, default_pre: str) -> str:
    """The llama.cpp pre-tokenizer matching tokenizer.json's, by its configuration."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Split" and _BLOOM_SPLIT_MARK in str(step.get("pattern", {}).get("Regex", "")):
            return "bloom"
    kinds = [s.get("type") for s in steps]
    byte_level_regex = kinds[-1:] == ["ByteLevel"] and steps[-1].get("use_regex", True)
    if kinds == ["ByteLevel"] and byte_level_regex:
        return "gpt-2"  # GPT-2's regex; llama.cpp's "mpt" and "olmo" (the NeoX-20B tokenizer) select the same one
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level_regex:
        return "smollm"  # single digits, then GPT-2's regex
    return default_pre


def _bpe_merges(tokenizer: dict, directory: Path) -> list[str]:
    merges = (tokenizer.get("model") or {}).get("merges")
    if not merges and (directory / "merges.txt").is_file():
        lines = read_text(directory / "merges.txt", LARGE_JSON_BYTES).splitlines()
        merges = [line for line in lines if line.strip() and not line.startswith("#version")]
    if not merges:
        raise ConversionError(
            f"no BPE merges in {directory}/tokenizer.json or merges.txt; re-download the tokenizer files"
        )
    if isinstance(merges[0], list):  # the pair form written since transformers 4.45; GGUF stores "a b"
        return [" ".join(part.replace(" ", chr(ord(" ") + 256)) for part in pair) for pair in merges]
    return list(merges)


def _bpe_vocab(
    directory: Path, n_vocab: int, config: dict, default_pre: str, chat_template: str | None, eos_token: str | None
) -> Vocab:
    tokenizer = _read_json(directory / "tokenizer.json", TOKENIZER_JSON, LARGE_JSON_BYTES)
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError(
            f"{directory}/tokenizer.json is not a BPE tokenizer (type {model.get('type')!r}); this architecture needs one"
        )
    tokenizer_config = _read_json(directory / "tokenizer_config.json", TOKENIZER_CONFIG_JSON)
    table = _TokenTable(n_vocab, "tokenizer.json")
    # The schema lets model.vocab be Unigram's list as well; BPE maps text to ids.
    vocab = check(model.get("vocab", {}), Map(_TOKEN_ID), directory / "tokenizer.json", "model.vocab")
    for text, token_id in vocab.items():
        table.set(token_id, text, gguf.TokenType.NORMAL)
    for entry in tokenizer.get("added_tokens", []):
        special = entry.get("special") or _looks_special(entry["content"])
        table.set(entry["id"], entry["content"], gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    _overlay_added_tokens(table, directory, tokenizer_config)
    tokens, types, _ = table.finish()
    add_bos = tokenizer_config.get("add_bos_token")
    if not isinstance(add_bos, bool):
        single = ((tokenizer.get("post_processor") or {}).get("single")) or [{}]
        add_bos = "SpecialToken" in single[0]
    add_eos = tokenizer_config.get("add_eos_token")
    return Vocab(
        model="gpt2",
        pre=_bpe_pre(tokenizer, default_pre),
        tokens=tokens,
        types=types,
        merges=_bpe_merges(tokenizer, directory),
        special_ids=_resolve_special_ids(table, directory, tokenizer_config, config, {}, eos_token),
        add_bos=add_bos,
        add_eos=add_eos if isinstance(add_eos, bool) else False,
        chat_template=_chat_template(directory, tokenizer_config, chat_template),
    )


def load_vocab(
    directory: Path,
    n_vocab: int,
    config: dict,
    default_pre: str,
    chat_template: str | None = None,
    eos_token: str | None = None,
    hints: TokenizerHints = TokenizerHints(),
) -> Vocab:
    """Reads whichever tokenizer the directory has: SentencePiece first (as LLaMA and T5 ship), then BPE.

    A SentencePiece file is taken for what its trainer spec says; one that does not say is what its
    name implies (LLaMA's tokenizer.model is BPE, T5's spiece.model Unigram).
    """
    for name in _DEFAULT_MODEL_TYPES:
        if (directory / name).is_file():
            return _sentencepiece_vocab(directory / name, n_vocab, config, chat_template, eos_token, hints)
    if (directory / "tokenizer.json").is_file():
        return _bpe_vocab(directory, n_vocab, config, default_pre, chat_template, eos_token)
    raise ConversionError(f"no tokenizer in {directory}: expected tokenizer.model, spiece.model or tokenizer.json")
