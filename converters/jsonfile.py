"""The one reader for JSON a checkpoint brings: config.json, tokenizer files, shard indexes, safetensors headers.

`read_json` bounds the bytes it reads, decodes strict UTF-8 and parses; `check` then holds the
value against a schema that describes the fields the converters read: their types, value ranges
and the alternative forms real files use. Anything else ends in one `ConversionError` line naming
the file, the key path and the problem, so the code that reads a checked value can trust its type.

A schema is built from `Obj`, `Map`, `Arr`, `Tup`, `OneOf`, `Int`, `Num` and the scalar markers
`STR`, `BOOL`, `NULL` and `ANY`. `Obj` only checks the keys it names, so a file may carry fields no
converter reads, in whatever form.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConversionError

# config.json, tokenizer_config.json, shard indexes: kilobytes in real checkpoints, a few MB at most
# (added_tokens_decoder of a large vocabulary, a 160-shard index).
SMALL_JSON_BYTES = 16 * 2**20
# tokenizer.json of a 250k vocabulary (BLOOM) is 14 MB; parsing takes about 15 times the file in memory.
LARGE_JSON_BYTES = 64 * 2**20


class Schema:
    description: str

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        """(key path, what is wrong) for the first part of value that does not fit, or None."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Scalar(Schema):
    description: str
    types: tuple[type, ...]

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types):
            return None
        return where, f"must be {self.description}, not {describe(value)}"


STR = _Scalar("a string", (str,))
BOOL = _Scalar("true or false", (bool,))
NULL = _Scalar("null", (type(None),))


@dataclass(frozen=True)
class _Any(Schema):
    description: str = "any value"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        return None


ANY = _Any()


@dataclass(frozen=True)
class Int(Schema):
    """A JSON integer (not a boolean, not 2.0) within [minimum, maximum]."""

    minimum: int | None = None
    maximum: int | None = None

    @property
    def description(self) -> str:
        return "an integer" + _range_text(self.minimum, self.maximum)

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return where, f"must be {self.description}, not {describe(value)}"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return where, f"is {_number_text(value)}, but must be {self.description}"
        return None


@dataclass(frozen=True)
class Num(Schema):
    """A finite JSON number (integers count) within [minimum, maximum]; `positive` excludes zero."""

    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False

    @property
    def description(self) -> str:
        return ("a positive number" if self.positive else "a number") + _range_text(self.minimum, self.maximum)

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return where, f"must be {self.description}, not {describe(value)}"
        too_small = (self.minimum is not None and value < self.minimum) or (self.positive and value <= 0)
        if too_small or (self.maximum is not None and value > self.maximum):
            return where, f"is {_number_text(value)}, but must be {self.description}"
        return None


@dataclass(frozen=True)
class Obj(Schema):
    """A JSON object; each named key, when present, fits its schema; `required` keys must be present."""

    fields: Mapping[str, Schema]
    required: Sequence[str] = ()
    description: str = "an object"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, dict):
            return where, f"must be an object, not {describe(value)}"
        for key in self.required:
            if key not in value:
                return _join(where, key), "is missing"
        for key, schema in self.fields.items():
            if key in value:
                found = schema.problem(value[key], _join(where, key))
                if found:
                    return found
        return None


@dataclass(frozen=True)
class Map(Schema):
    """A JSON object used as a mapping: every value fits `values` (keys are always strings in JSON)."""

    values: Schema
    integer_keys: bool = False
    """Keys are decimal ids, as in tokenizer_config.json's added_tokens_decoder ({"32000": {…}})."""
    description: str = "an object"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, dict):
            return where, f"must be an object, not {describe(value)}"
        for key, item in value.items():
            key_path = f"{where}[{json.dumps(key, ensure_ascii=False)[:80]}]"
            if self.integer_keys and not (key.isascii() and key.isdigit() and len(key) <= 10):
                return key_path, "must be keyed by a token id (a decimal number)"
            found = self.values.problem(item, key_path)
            if found:
                return found
        return None


@dataclass(frozen=True)
class Arr(Schema):
    """A JSON array whose items fit `items`."""

    items: Schema
    description: str = "an array"
    max_length: int | None = None

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, list):
            return where, f"must be an array, not {describe(value)}"
        if self.max_length is not None and len(value) > self.max_length:
            return where, f"has {len(value)} items, more than {self.max_length}"
        for index, item in enumerate(value):
            found = self.items.problem(item, f"{where}[{index}]")
            if found:
                return found
        return None


@dataclass(frozen=True)
class Tup(Schema):
    """A JSON array of fixed length, item i fitting schema i."""

    items: tuple[Schema, ...]
    description: str = "an array"

    def __init__(self, *items: Schema) -> None:
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "description", f"an array of {len(items)}")

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if not isinstance(value, list) or len(value) != len(self.items):
            return where, f"must be {self.description}, not {describe(value)}"
        for index, (item, schema) in enumerate(zip(value, self.items, strict=True)):
            found = schema.problem(item, f"{where}[{index}]")
            if found:
                return found
        return None


@dataclass(frozen=True)
class OneOf(Schema):
    """Any of several forms (a real file's old and new spellings)."""

    forms: tuple[Schema, ...] = field(default=())
    description: str = ""

    def __init__(self, *forms: Schema) -> None:
        object.__setattr__(self, "forms", forms)
        object.__setattr__(self, "description", " or ".join(f.description for f in forms))

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        problems = []
        for form in self.forms:
            found = form.problem(value, where)
            if found is None:
                return None
            problems.append(found)
        # The form that fits furthest into the value (an object whose one entry is wrong) says what is wrong;
        # when none gets past the value itself, say which forms it could have.
        deepest = max(problems, key=lambda found: len(found[0]))
        return deepest if deepest[0] != where else (where, f"must be {self.description}, not {describe(value)}")


def describe(value: Any) -> str:
    """A JSON value as an error message names it: its kind, and a short excerpt for scalars."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {_number_text(value)}"
    if isinstance(value, str):
        excerpt = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(excerpt, ensure_ascii=False)}"
    return "an array" if isinstance(value, list) else "an object"


def _number_text(value: int | float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{value:.3e}"


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" of at least {minimum}"
    return f" of at most {maximum}" if maximum is not None else ""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check(value: Any, schema: Schema, source: str | Path, where: str = "", fix: str | None = None) -> Any:
    """Returns value when it fits schema; otherwise ConversionError naming source, the key path, the problem and `fix`."""
    found = schema.problem(value, where)
    if found is not None:
        key, problem = found
        raise ConversionError(
            f"{source}: {key or 'the file'} {problem}; {fix or f'fix or re-download {Path(source).name}'}"
        )
    return value


def _decode(raw: bytes, source: str | Path) -> str:
    """Strict UTF-8; a byte-order mark (some Windows editors write one) is allowed."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConversionError(
            f"{source} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); fix or re-download it"
        ) from None


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a file, refused unread when it is larger than max_bytes.

    The read is sized from the file's own size, not from the bound: `read(n)` allocates n bytes
    before it reads, so reading up to the bound would cost 16 MiB for every 1 KB config.json.
    """
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > max_bytes:
            raise _too_large(path, max_bytes)
        raw = stream.read(size + 1)
        if len(raw) > size:
            # Longer than its size said: a file still being written, or one that reports no size
            # (/proc, a pipe). Read on, up to the bound.
            raw += stream.read(max_bytes + 1 - len(raw))
    if len(raw) > max_bytes:
        raise _too_large(path, max_bytes)
    return raw


def _too_large(path: Path, max_bytes: int) -> ConversionError:
    return ConversionError(
        f"{path} is larger than {max_bytes // 2**20} MiB, far more than such a file holds; check it is the right file"
    )


def parse_json(raw: bytes, source: str | Path) -> Any:
    """JSON from bytes; nesting is bounded by Python's recursion limit (the parser raises, never crashes)."""
    try:
        return json.loads(_decode(raw, source))
    except json.JSONDecodeError as error:
        raise ConversionError(
            f"{source} is not valid JSON ({error.msg} at line {error.lineno}); fix or re-download it"
        ) from None
    except RecursionError:
        raise ConversionError(
            f"{source} nests JSON arrays or objects too deep to be a real file; re-download it"
        ) from None


def read_json(path: Path, schema: Schema = ANY, max_bytes: int = SMALL_JSON_BYTES) -> Any:
    """A JSON file, checked against schema; refused unread when larger than max_bytes."""
    return check(parse_json(read_bounded(path, max_bytes), path), schema, path)


def read_text(path: Path, max_bytes: int = SMALL_JSON_BYTES) -> str:
    """A text file a checkpoint brings (merges.txt, chat_template.jinja): bounded, strict UTF-8."""
    return _decode(read_bounded(path, max_bytes), path)
