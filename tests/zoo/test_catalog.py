"""The seed-zoo catalog: the bundled data file, and validation messages for broken entries."""

from __future__ import annotations

import dataclasses
import json

import pytest

from converters.archs import REGISTRY as ARCHITECTURES
from tui.zoo.catalog import CatalogError, Recipe, ReleaseForm, Runtime, Status, load_catalog, parse_catalog
from tui.zoo.jobs import RECIPES
from tui.zoo.templates import FORMATS

SEED_SYSTEMS = {
    "ChatYuan",
    "Vicuna",
    "Chinese-Vicuna",
    "MiniGPT-4",
    "ColossalChat (Coati)",
    "ChatGLM-6B",
    "OpenFlamingo",
    "ChatLLaMA",
    "Stanford Alpaca",
    "OpenChatKit",
    "BELLE",
    "alpaca-lora",
    "Chinese-alpaca-lora (Luotuo)",
    "Dolly",
    "LMFlow (Robin)",
    "Baize",
    "Koala",
    "StackLLaMA",
    "DeepSpeed-Chat",
    "RRHF (Wombat)",
    "LLMZoo (Phoenix, Chimera)",
    "OpenAssistant",
}


def test_bundled_catalog_has_every_seed_system():
    assert {system.name for system in load_catalog().systems} == SEED_SYSTEMS


def test_every_variant_has_a_chat_format_or_says_why_not():
    for _, variant in load_catalog().variants():
        if variant.status is Status.SUPPORTED:
            assert variant.prompt_format in FORMATS, variant.id
            assert variant.hub_id, variant.id
        else:
            assert variant.reason, variant.id


def test_supported_variants_name_an_architecture_and_a_recipe_zootui_implements():
    """A supported status is a promise that a pull converts: the architecture must be one that a
    module in converters/archs/ registers (or, for chatglm.cpp, ChatGLM-6B's own converter), and the recipe
    one that the recover step dispatches."""
    for _, variant in load_catalog().variants():
        if variant.status is not Status.SUPPORTED:
            continue
        if variant.runtime is Runtime.CHATGLM_CPP:
            assert variant.arch == "ChatGLMModel" and variant.recipe is Recipe.NONE, variant.id
            continue
        assert variant.arch in ARCHITECTURES, f"{variant.id}: no converter for {variant.arch}"
        assert variant.recipe is Recipe.NONE or variant.recipe in RECIPES, (
            f"{variant.id}: recipe {variant.recipe.value} is not implemented"
        )


def test_the_truth_check_sees_what_the_code_implements():
    assert {"LlamaForCausalLM", "GPTNeoXForCausalLM", "BloomForCausalLM"} <= set(ARCHITECTURES)
    assert {"ChatGLMModel", "GPTJForCausalLM", "T5ForConditionalGeneration"} <= set(ARCHITECTURES)
    assert Recipe.NONE not in RECIPES and Recipe.ADD_DELTA in RECIPES


@pytest.mark.parametrize(
    ("variant_id", "status", "reason_mentions"),
    [
        ("deepspeed-chat-opt-1.3b", Status.UNSUPPORTED, "OPT"),
        ("minigpt4-llama2-7b", Status.UNSUPPORTED, "Google Drive only"),
        ("openflamingo-9b-v1", Status.UNSUPPORTED, "multimodal"),
        ("coati-7b", Status.LOCAL_ONLY, "no weights released"),
        ("chatllama-7b", Status.LOCAL_ONLY, "no weights released"),
        ("deepspeed-chat-llama2-7b", Status.LOCAL_ONLY, "no weights released"),
    ],
)
def test_variants_zootui_cannot_run_say_why(variant_id, status, reason_mentions):
    _, variant = load_catalog().variant(variant_id)
    assert variant.status is status
    assert reason_mentions in variant.reason


def test_systems_without_weights_accept_a_local_checkpoint():
    for system_id in ("colossalchat", "chatllama"):
        system = next(s for s in load_catalog().systems if s.id == system_id)
        assert all(v.release_form is ReleaseForm.NONE and v.hub_id is None for v in system.variants)
        assert all(v.status is Status.LOCAL_ONLY for v in system.variants)


def test_recipes_carry_what_recovery_needs():
    catalog = load_catalog()
    assert catalog.variant("alpaca-7b")[1].recipe is Recipe.ADD_DELTA_MEAN_PAD
    assert catalog.variant("alpaca-7b")[1].weight_sum == pytest.approx(50637.1836)
    assert catalog.variant("wombat-7b")[1].pad_token == "[PAD]"
    assert catalog.variant("chimera-chat-7b")[1].pad_token == "<pad>"
    assert catalog.variant("stackllama-7b-rl")[1].merge_first == ("trl-lib/llama-7b-se-peft",)
    assert catalog.variant("oasst-sft-6-llama-30b")[1].recipe is Recipe.XOR_FILES
    assert catalog.variant("belle-llama-7b-2m")[1].recipe is Recipe.XOR_KEYSTREAM


def test_rows_flatten_every_variant_for_json():
    catalog = load_catalog()
    rows = catalog.rows()
    assert len(rows) == len(catalog.variants())
    row = next(r for r in rows if r["id"] == "vicuna-7b-v1.1")
    assert {k: row[k] for k in ("family", "variant", "arch", "release_form", "status", "reason")} == {
        "family": "vicuna",
        "variant": "Vicuna 7B v1.1",
        "arch": "LlamaForCausalLM",
        "release_form": "delta",
        "status": "supported",
        "reason": None,
    }
    assert json.loads(json.dumps(rows)) == rows


def test_entries_are_frozen():
    _, variant = load_catalog().variant("vicuna-7b-v1.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        variant.status = Status.UNSUPPORTED  # type: ignore[misc]


VALID = """
[[systems]]
id = "toy"
name = "Toy"
upstream = "example/toy"
summary = "A toy system."

[systems.defaults]
arch = "LlamaForCausalLM"
license = "MIT"
gated = false
tokenizer = "LLaMA SentencePiece."
prompt_format = "vicuna_v1.1"

[[systems.variants]]
id = "toy-7b"
name = "Toy 7B"
hub_id = "example/toy-7b"
release_form = "full"
recipe = "none"
status = "supported"
"""


def test_minimal_catalog_parses_with_defaults_applied():
    (system,) = parse_catalog(VALID).systems
    (variant,) = system.variants
    assert (variant.arch, variant.prompt_format, variant.stop) == ("LlamaForCausalLM", "vicuna_v1.1", ())


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'status = "supported"',
            'status = "maybe"',
            "variant 'toy-7b': key 'status' must be one of supported, local-only, unsupported",
        ),
        ('recipe = "none"\n', "", "variant 'toy-7b': missing key 'recipe'"),
        ("gated = false", 'gated = "no"', "variant 'toy-7b': key 'gated' must be true or false"),
        (
            'hub_id = "example/toy-7b"',
            'hub_id = "example/toy-7b"\ncolour = "red"',
            "variant 'toy-7b': unknown key 'colour'",
        ),
        ('prompt_format = "vicuna_v1.1"', 'prompt_format = "klingon"', "key 'prompt_format' names no known format"),
        ('status = "supported"', 'status = "unsupported"', "variant 'toy-7b': missing key 'reason'"),
        ('recipe = "none"', 'recipe = "add-delta"', "variant 'toy-7b': missing key 'base'"),
        (
            'release_form = "full"',
            'release_form = "none"',
            "variant 'toy-7b': key 'hub_id' contradicts release_form 'none'",
        ),
        (
            'status = "supported"',
            'status = "supported"\nparameters_b = -7',
            "key 'parameters_b' must be a positive number",
        ),
        (
            'status = "supported"',
            'status = "supported"\nstop = "###"',
            "key 'stop' must be a list of non-empty strings",
        ),
        ('license = "MIT"', 'license = "MIT"\nname = "x"', "defaults: unknown key 'name'"),
        ('id = "toy"', 'id = "toy"\nextra = 1', "(toy): unknown key 'extra'"),
        ("[[systems]]", "[[systems]", "catalog is not valid TOML"),
        (
            'arch = "LlamaForCausalLM"',
            'arch = "MysteryForCausalLM"',
            "variant 'toy-7b': key 'arch' names no architecture whose BOS and EOS texts zootui knows",
        ),
    ],
)
def test_broken_entries_fail_with_one_line_naming_entry_and_key(old, new, message):
    assert old in VALID
    with pytest.raises(CatalogError) as failure:
        parse_catalog(VALID.replace(old, new, 1))
    assert message in str(failure.value)
    assert "\n" not in str(failure.value)


def test_a_repeated_variant_id_is_named():
    variant_block = VALID[VALID.index("[[systems.variants]]") :]
    with pytest.raises(CatalogError, match="variant 'toy-7b': key 'id' repeats an earlier variant"):
        parse_catalog(VALID + variant_block)


def test_what_the_catalog_has_not_confirmed_is_said_plainly_to_users():
    rows = load_catalog().rows()
    assert any("not confirmed" in (row["reason"] or "") + row["license"] for row in rows)
    assert not any("unverified" in json.dumps(row) for row in rows)
