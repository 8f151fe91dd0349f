"""The seed-zoo catalog: ``catalog.toml`` loaded into frozen, validated dataclasses.

A bad entry fails the load with one line naming the system, the variant and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from tui.compat import tomllib
from tui.glm_runtime import GLM_EXTRA, chatglm_cpp_missing
from tui.zoo.templates import FORMATS


class CatalogError(ValueError):
    """The catalog file is malformed; the message is one line naming the entry and key."""


class ReleaseForm(str, Enum):
    """What the authors published."""

    FULL = "full"
    DELTA = "delta"
    XOR = "xor"
    LORA = "lora"
    MULTIMODAL_ADAPTER = "multimodal-adapter"
    NONE = "none"


class Recipe(str, Enum):
    """How the usable weights are rebuilt from what was published (functions of converters.recover)."""

    NONE = "none"
    ADD_DELTA = "add-delta"  # apply_delta
    ADD_DELTA_ZERO_PAD = "add-delta-zero-pad"  # apply_delta(pad_rows="zero")
    ADD_DELTA_MEAN_PAD = "add-delta-mean-pad"  # apply_delta(pad_rows="mean", dtype=float32, expected_sum=weight_sum)
    XOR_FILES = "xor-files"  # xor_files
    XOR_KEYSTREAM = "xor-keystream"  # decrypt_keystream
    LORA_MERGE = "lora-merge"  # merge_lora(base, [*merge_first, adapter]) or write_lora_gguf
    EASYLM_DIFF = "easylm-diff"  # apply_easylm_diff (Koala's EasyLM streaming-msgpack diffs)
    MULTIMODAL_ADAPTER = "multimodal-adapter"  # not implemented: vision towers


class Status(str, Enum):
    """Whether zootui can run a variant today."""

    SUPPORTED = "supported"
    LOCAL_ONLY = "local-only"
    """Nothing to download: the user imports a checkpoint directory."""
    UNSUPPORTED = "unsupported"


class Runtime(str, Enum):
    """What runs a variant: llama.cpp (GGUF), or an optional engine where llama.cpp has no graph."""

    LLAMA_CPP = "llama.cpp"
    CHATGLM_CPP = "chatglm.cpp"
    """ChatGLM-6B v1 (GLM v1), through the ``glm`` extra (PyPI ``chatglm-cpp``)."""

    @property
    def extra(self) -> str | None:
        """The zootui extra that installs this runtime (None: it comes with zootui)."""
        return GLM_EXTRA if self is Runtime.CHATGLM_CPP else None

    def missing(self) -> str | None:
        """One line saying what to install when this runtime is not installed; None when it is."""
        return chatglm_cpp_missing() if self is Runtime.CHATGLM_CPP else None


@dataclass(frozen=True)
class Variant:
    """One downloadable (or importable) model of a system."""

    id: str
    """Unique across the catalog, e.g. ``vicuna-7b-v1.1``."""
    name: str
    arch: str
    """Hugging Face architecture class, or a description for composite multimodal models."""
    license: str
    gated: bool
    release_form: ReleaseForm
    recipe: Recipe
    tokenizer: str
    """Tokenizer kind and quirks (wrong config ids, added tokens)."""
    status: Status
    hub_id: str | None = None
    files: tuple[str, ...] = ()
    """``allow_patterns`` when the repo holds several models (Koala); empty means pick by format."""
    parameters_b: float | None = None
    download_gb: float | None = None
    base: str | None = None
    """The base model the recipe needs, in words."""
    base_hub_id: str | None = None
    merge_first: tuple[str, ...] = ()
    """Adapters merged into the base, in order, before this variant's own (StackLLaMA's chain)."""
    pad_token: str | None = None
    """Token the recipe adds to the base before applying the delta."""
    weight_sum: float | None = None
    """Expected sum of all recovered tensors (Alpaca's integrity check)."""
    vocab_size: int | None = None
    prompt_format: str | None = None
    """A key of ``tui.zoo.templates.FORMATS``; None when the model has no chat format."""
    stop: tuple[str, ...] = ()
    reason: str | None = None
    """Why the status is not ``supported``."""
    notes: tuple[str, ...] = ()
    vision_hub_id: str | None = None
    """A model that also sees images (MiniGPT-4): the BLIP-2 checkpoint in Hugging Face form whose ViT,
    ``ln_vision``, Q-Former and query tokens make its vision side (only the shards holding them are fetched)."""
    projection_hub_id: str | None = None
    """Where the projection into the language model is published (``spaces/owner/name`` for a Space)."""
    projection_file: str | None = None
    """The projection's checkpoint file in that repo (MiniGPT-4's ``pretrained_minigpt4*.pth``)."""
    runtime: Runtime = Runtime.LLAMA_CPP

    @property
    def sees_images(self) -> bool:
        return self.vision_hub_id is not None

    @property
    def prompt_tokens(self) -> tuple[str, str]:
        """The BOS and EOS texts the variant's prompt format is rendered with before any GGUF exists:
        its tokenizer's, with the format's own end-of-answer text as EOS when it has one (the converter
        makes that the GGUF's EOS: Dolly's "### End")."""
        bos, eos = special_tokens(self.arch)
        chosen = FORMATS.get(self.prompt_format) if self.prompt_format else None
        return bos, (chosen.eos if chosen and chosen.eos else eos)


# BOS and EOS texts of each architecture's tokenizer (shared/reference/seed-models.md). Matched as
# substrings, so composite multimodal architectures find their language model. ChatGLM's templates
# use neither; ChatGLM-6B's <eop> comes from its format.
ARCH_SPECIAL_TOKENS: dict[str, tuple[str, str]] = {
    "LlamaForCausalLM": ("<s>", "</s>"),
    "BloomForCausalLM": ("<s>", "</s>"),
    "GPTNeoXForCausalLM": ("<|endoftext|>", "<|endoftext|>"),
    "GPTJForCausalLM": ("<|endoftext|>", "<|endoftext|>"),
    "OPTForCausalLM": ("</s>", "</s>"),  # OPT's tokenizer uses </s> (id 2) as BOS too
    "T5ForConditionalGeneration": ("", "</s>"),  # T5 has no BOS token
    "ChatGLMModel": ("<s>", "</s>"),
}


def special_tokens(arch: str) -> tuple[str, str]:
    """(BOS, EOS) texts of an architecture's tokenizer; KeyError for one the table does not know."""
    found = next((tokens for name, tokens in ARCH_SPECIAL_TOKENS.items() if name in arch), None)
    if found is None:
        raise KeyError(arch)
    return found


@dataclass(frozen=True)
class System:
    """A seed chat system from the 2023 survey, with its variants."""

    id: str
    name: str
    upstream: str
    summary: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class Catalog:
    systems: tuple[System, ...]

    def variants(self) -> list[tuple[System, Variant]]:
        return [(system, variant) for system in self.systems for variant in system.variants]

    def variant(self, variant_id: str) -> tuple[System, Variant]:
        for system, variant in self.variants():
            if variant.id == variant_id:
                return system, variant
        raise KeyError(f"no catalog variant {variant_id!r}")

    def rows(self) -> list[dict[str, Any]]:
        """Every variant flattened for ``zootui models --all --json``."""
        return [
            {
                "id": variant.id,
                "family": system.id,
                "variant": variant.name,
                "arch": variant.arch,
                "release_form": variant.release_form.value,
                "status": variant.status.value,
                "reason": shown(variant.reason) if variant.reason else None,
                "hub_id": variant.hub_id,
                "parameters_b": variant.parameters_b,
                "download_gb": variant.download_gb,
                "license": shown(variant.license),
                "gated": variant.gated,
                "recipe": variant.recipe.value,
                "prompt_format": variant.prompt_format,
            }
            for system, variant in self.variants()
        ]


def shown(text: str) -> str:
    """Catalog prose as users read it. The catalog marks facts its sources could not confirm "unverified"
    (for whoever checks them next); users are told plainly that zootui has not confirmed them."""
    return _UNVERIFIED_WORD.sub("not confirmed", _UNVERIFIED_MARK.sub(" (not confirmed)", text))


_UNVERIFIED_MARK = re.compile(r"\s*\(unverified\)")
_UNVERIFIED_WORD = re.compile(r"\bunverified\b")


E = TypeVar("E", bound=Enum)


class _Entry:
    """Typed reads from one TOML table; every error names ``where`` and the key."""

    def __init__(self, table: dict[str, Any], where: str, known: set[str]) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            raise CatalogError(f"{where}: unknown key {unknown[0]!r}")
        self.table = table
        self.where = where

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.table and required:
            raise CatalogError(f"{self.where}: missing key {key!r}")
        return self.table.get(key)

    def _fail(self, key: str, expected: str) -> CatalogError:
        return CatalogError(f"{self.where}: key {key!r} must be {expected}, got {self.table[key]!r}")

    def text(self, key: str) -> str:
        value = self._get(key, True)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, str):
            raise self._fail(key, "a string")
        return value or None

    def flag(self, key: str) -> bool:
        value = self._get(key, True)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def number(self, key: str) -> float | None:
        value = self._get(key, False)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise self._fail(key, "a positive number")
        return None if value is None else float(value)

    def count(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise self._fail(key, "a positive integer")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key, False)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self._fail(key, "a list of non-empty strings")
        return tuple(value)

    def choice(self, key: str, options: type[E], default: E | None = None) -> E:
        value = self._get(key, default is None)
        if value is None and default is not None:
            return default
        try:
            return options(value)
        except ValueError:
            raise self._fail(key, "one of " + ", ".join(o.value for o in options)) from None


_SYSTEM_KEYS = {"id", "name", "upstream", "summary", "defaults", "variants"}
_VARIANT_KEYS = {name for name in Variant.__dataclass_fields__}


def _read_variant(table: dict[str, Any], where: str) -> Variant:
    entry = _Entry(table, where, _VARIANT_KEYS)
    prompt_format = entry.optional_text("prompt_format")
    if prompt_format is not None and prompt_format not in FORMATS:
        raise CatalogError(f"{where}: key 'prompt_format' names no known format: {prompt_format!r}")
    variant = Variant(
        id=entry.text("id"),
        name=entry.text("name"),
        arch=entry.text("arch"),
        license=entry.text("license"),
        gated=entry.flag("gated"),
        release_form=entry.choice("release_form", ReleaseForm),
        recipe=entry.choice("recipe", Recipe),
        tokenizer=entry.text("tokenizer"),
        status=entry.choice("status", Status),
        hub_id=entry.optional_text("hub_id"),
        files=entry.texts("files"),
        parameters_b=entry.number("parameters_b"),
        download_gb=entry.number("download_gb"),
        base=entry.optional_text("base"),
        base_hub_id=entry.optional_text("base_hub_id"),
        merge_first=entry.texts("merge_first"),
        pad_token=entry.optional_text("pad_token"),
        weight_sum=entry.number("weight_sum"),
        vocab_size=entry.count("vocab_size"),
        prompt_format=prompt_format,
        stop=entry.texts("stop"),
        reason=entry.optional_text("reason"),
        notes=entry.texts("notes"),
        vision_hub_id=entry.optional_text("vision_hub_id"),
        projection_hub_id=entry.optional_text("projection_hub_id"),
        projection_file=entry.optional_text("projection_file"),
        runtime=entry.choice("runtime", Runtime, Runtime.LLAMA_CPP),
    )
    _check_consistency(variant, where)
    return variant


def _check_consistency(variant: Variant, where: str) -> None:
    """Rules that tie keys together, so a supported entry always carries what a job needs."""
    if variant.status is Status.SUPPORTED:
        if variant.reason:
            raise CatalogError(f"{where}: key 'reason' is only for variants that are not supported")
        if variant.hub_id is None:
            raise CatalogError(f"{where}: missing key 'hub_id' (a supported variant is downloaded from the Hub)")
        if variant.prompt_format is None:
            raise CatalogError(f"{where}: missing key 'prompt_format' (a supported variant needs one to chat)")
    elif not variant.reason:
        raise CatalogError(f"{where}: missing key 'reason' (say why the variant is {variant.status.value})")
    if variant.release_form is ReleaseForm.NONE and variant.hub_id is not None:
        raise CatalogError(f"{where}: key 'hub_id' contradicts release_form 'none' (nothing was released)")
    if variant.recipe not in (Recipe.NONE, Recipe.MULTIMODAL_ADAPTER) and not variant.base:
        raise CatalogError(f"{where}: missing key 'base' (recipe {variant.recipe.value!r} starts from a base model)")
    if variant.merge_first and variant.recipe is not Recipe.LORA_MERGE:
        raise CatalogError(f"{where}: key 'merge_first' needs recipe 'lora-merge'")
    vision_keys = ("vision_hub_id", "projection_hub_id", "projection_file")
    given = [name for name in vision_keys if getattr(variant, name) is not None]
    if given and len(given) != len(vision_keys):
        missing = next(name for name in vision_keys if name not in given)
        raise CatalogError(f"{where}: missing key {missing!r} (a vision side needs {', '.join(vision_keys)})")
    if variant.status is Status.SUPPORTED and variant.release_form is ReleaseForm.MULTIMODAL_ADAPTER:
        if not variant.sees_images:
            raise CatalogError(
                f"{where}: missing key 'vision_hub_id' (a supported multimodal variant needs its vision side)"
            )
        if variant.recipe is Recipe.MULTIMODAL_ADAPTER:
            raise CatalogError(f"{where}: key 'recipe' must say how the language model is rebuilt")
    if variant.prompt_format is not None:
        try:
            special_tokens(variant.arch)
        except KeyError:
            raise CatalogError(
                f"{where}: key 'arch' names no architecture whose BOS and EOS texts zootui knows "
                f"({', '.join(ARCH_SPECIAL_TOKENS)}), so its prompt cannot be shown"
            ) from None


def _read_system(table: Any, index: int, seen: set[str]) -> System:
    where = f"catalog systems[{index}]"
    if not isinstance(table, dict):
        raise CatalogError(f"{where}: must be a table")
    entry = _Entry(table, f"{where} ({table.get('id', '?')})", _SYSTEM_KEYS)
    system_id = entry.text("id")
    where = f"catalog system {system_id!r}"
    defaults = table.get("defaults", {})
    variants = table.get("variants")
    if not isinstance(defaults, dict):
        raise CatalogError(f"{where}: key 'defaults' must be a table")
    if not isinstance(variants, list) or not variants:
        raise CatalogError(f"{where}: key 'variants' must list at least one [[systems.variants]] table")
    _Entry(defaults, f"{where} defaults", _VARIANT_KEYS - {"id", "name"})
    read: list[Variant] = []
    for position, raw in enumerate(variants):
        if not isinstance(raw, dict):
            raise CatalogError(f"{where} variant {position}: must be a table")
        variant = _read_variant({**defaults, **raw}, f"{where} variant {raw.get('id', position)!r}")
        if variant.id in seen:
            raise CatalogError(f"{where} variant {variant.id!r}: key 'id' repeats an earlier variant")
        seen.add(variant.id)
        read.append(variant)
    return System(
        id=system_id,
        name=entry.text("name"),
        upstream=entry.text("upstream"),
        summary=entry.text("summary"),
        variants=tuple(read),
    )


def parse_catalog(text: str) -> Catalog:
    """Validate catalog TOML text; raises CatalogError with one line on the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"catalog is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"systems"})
    if unknown:
        raise CatalogError(f"catalog: unknown top-level key {unknown[0]!r}")
    systems = document.get("systems")
    if not isinstance(systems, list) or not systems:
        raise CatalogError("catalog: no [[systems]] entries")
    seen_variants: set[str] = set()
    read = [_read_system(table, index, seen_variants) for index, table in enumerate(systems)]
    ids = [system.id for system in read]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise CatalogError(f"catalog system {duplicate!r}: key 'id' repeats an earlier system")
    return Catalog(tuple(read))


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at ``path``, or the bundled seed zoo (parsed once)."""
    if path is not None:
        return parse_catalog(path.read_text("utf-8"))
    return _bundled_catalog()


@cache
def _bundled_catalog() -> Catalog:
    return parse_catalog(resources.files(__package__).joinpath("catalog.toml").read_text("utf-8"))
