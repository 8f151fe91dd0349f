"""The tiny zoo, for job and browser tests: the committed tiny LLaMA checkpoint published on a local
Hub server as a base repo, a random additive delta to it published as the chat model, two random
PEFT LoRA adapters on it (one to use alone, one merged first as StackLLaMA's SFT adapter), and a
catalog file that points at them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hubserver import HubServer
from support import ROOT

from converters import open_checkpoint
from converters.recover import OutputTensor, SafetensorsWriter
from tui.store import DATABASE_NAME, Store
from tui.zoo.catalog import Catalog, load_catalog
from tui.zoo.jobs import Jobs

TINY_LLAMA = ROOT / "tests" / "fixtures" / "tiny" / "llama"
BASE_REPO = "zoo-test/tiny-llama-base"
DELTA_REPO = "zoo-test/tiny-chat-delta"
VARIANT = "tiny-chat-7b"
LORA_REPO = "zoo-test/tiny-lora"
SFT_LORA_REPO = "zoo-test/tiny-sft-lora"
LORA_VARIANT = "tiny-lora-chat"
LORA_CHAIN_VARIANT = "tiny-lora-chat-rl"
LFS_FILES = {"model.safetensors", "tokenizer.model"}
_WEIGHT_SUFFIXES = (".bin", ".safetensors", ".model")

CATALOG = f"""
[[systems]]
id = "tinychat"
name = "TinyChat"
upstream = "zootui/tests"
summary = "A tiny LLaMA-architecture chat model released as an additive delta, for tests."

[systems.defaults]
arch = "LlamaForCausalLM"
license = "test only"
gated = false
tokenizer = "the tiny fixture's SentencePiece model"
prompt_format = "vicuna_v1.1"

[[systems.variants]]
id = "{VARIANT}"
name = "TinyChat delta"
hub_id = "{DELTA_REPO}"
release_form = "delta"
recipe = "add-delta"
base = "the tiny LLaMA base"
base_hub_id = "{BASE_REPO}"
status = "supported"

[[systems.variants]]
id = "tiny-chat-gated"
name = "TinyChat gated"
hub_id = "zoo-test/tiny-gated"
gated = true
release_form = "full"
recipe = "none"
status = "supported"

[[systems.variants]]
id = "tiny-chat-private-base"
name = "TinyChat on a base that is not on the Hub"
hub_id = "{DELTA_REPO}"
release_form = "delta"
recipe = "add-delta"
base = "the original tiny LLaMA weights"
status = "supported"

[[systems.variants]]
id = "tiny-chat-opt"
name = "TinyChat OPT"
hub_id = "zoo-test/tiny-opt"
arch = "OPTForCausalLM"
release_form = "full"
recipe = "none"
status = "unsupported"
reason = "OPT: llama.cpp has no graph with learned positions and a ReLU MLP"

[[systems.variants]]
id = "tiny-chat-unreleased"
name = "TinyChat unreleased"
release_form = "none"
recipe = "none"
status = "local-only"
reason = "the authors released no weights"

[[systems.variants]]
id = "{LORA_VARIANT}"
name = "TinyChat LoRA"
hub_id = "{LORA_REPO}"
release_form = "lora"
recipe = "lora-merge"
base = "the tiny LLaMA base"
base_hub_id = "{BASE_REPO}"
status = "supported"

[[systems.variants]]
id = "{LORA_CHAIN_VARIANT}"
name = "TinyChat LoRA on the SFT LoRA"
hub_id = "{LORA_REPO}"
merge_first = ["{SFT_LORA_REPO}"]
release_form = "lora"
recipe = "lora-merge"
base = "the tiny LLaMA base"
base_hub_id = "{BASE_REPO}"
status = "supported"
"""


@dataclass
class TinyZoo:
    hub: HubServer
    catalog: Catalog
    catalog_path: Path
    hub_cache: Path
    delta_dir: Path
    delta: dict[str, np.ndarray]
    commits: dict[str, str]

    def publish_base(self) -> None:
        self.commits[BASE_REPO] = self.hub.add_repo(BASE_REPO, repo_files(TINY_LLAMA), lfs=LFS_FILES).commit

    def expected_weights(self) -> dict[str, np.ndarray]:
        """base + delta summed in float32 and stored as float16, computed here with numpy alone."""
        with open_checkpoint(TINY_LLAMA) as base:
            return {
                name: (base.load(name).astype(np.float32) + self.delta[name].astype(np.float32)).astype(np.float16)
                for name in base.names()
            }

    def jobs(self, data_dir: Path) -> Jobs:
        # token=False: never send a developer's own Hub token to the test server.
        return Jobs(Store(data_dir / DATABASE_NAME), data_dir, self.catalog, hub_cache=self.hub_cache, hub_token=False)


def repo_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if not path.name.startswith("reference")}


def _write_delta(directory: Path) -> dict[str, np.ndarray]:
    """A random additive delta with the base's tensor names and shapes, as FastChat publishes one."""
    rng = np.random.default_rng(2023)
    with open_checkpoint(TINY_LLAMA) as base:
        plan = [OutputTensor(name, base.info(name).shape, "F16") for name in base.names()]
    delta = {t.name: (rng.standard_normal(t.shape) * 0.05).astype(np.float16) for t in plan}
    directory.mkdir(parents=True)
    with SafetensorsWriter(directory, plan) as writer:
        for tensor in plan:
            writer.write(tensor.name, delta[tensor.name])
        writer.finish()
    shutil.copyfile(TINY_LLAMA / "config.json", directory / "config.json")
    return delta


def _write_lora(directory: Path, seed: int) -> None:
    """A random PEFT LoRA adapter (r=4, alpha=8) on the base's q_proj and v_proj, as alpaca-lora publishes one.

    B·A is large enough (entries about twice the base weights') that the adapted model answers
    differently from the base.
    """
    rng = np.random.default_rng(seed)
    config = json.loads((TINY_LLAMA / "config.json").read_text("utf-8"))
    hidden, rank = config["hidden_size"], 4
    matrices: dict[str, np.ndarray] = {}
    for layer in range(config["num_hidden_layers"]):
        for projection in ("q_proj", "v_proj"):
            module = f"base_model.model.model.layers.{layer}.self_attn.{projection}"
            matrices[f"{module}.lora_A.weight"] = (rng.standard_normal((rank, hidden)) * 0.2).astype(np.float32)
            matrices[f"{module}.lora_B.weight"] = (rng.standard_normal((hidden, rank)) * 0.2).astype(np.float32)
    plan = [OutputTensor(name, matrix.shape, "F32") for name, matrix in matrices.items()]
    directory.mkdir(parents=True)
    with SafetensorsWriter(directory, plan) as writer:
        for name, matrix in matrices.items():
            writer.write(name, matrix)
        writer.finish()
    (directory / "model.safetensors").rename(directory / "adapter_model.safetensors")
    adapter_config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.05,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(adapter_config), "utf-8")


@contextmanager
def serve_tiny_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, with_base: bool = True) -> Iterator[TinyZoo]:
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        delta_dir = tmp_path / "published-delta"
        delta = _write_delta(delta_dir)
        commits = {DELTA_REPO: hub.add_repo(DELTA_REPO, repo_files(delta_dir), lfs=LFS_FILES).commit}
        hub.add_repo("zoo-test/tiny-gated", repo_files(TINY_LLAMA), lfs=LFS_FILES, gated=True)
        for seed, repo in enumerate((LORA_REPO, SFT_LORA_REPO)):
            lora_dir = tmp_path / f"published-{repo.split('/')[-1]}"
            _write_lora(lora_dir, seed)
            commits[repo] = hub.add_repo(repo, repo_files(lora_dir), lfs={"adapter_model.safetensors"}).commit
        catalog_path = tmp_path / "catalog.toml"
        catalog_path.write_text(CATALOG, "utf-8")
        zoo = TinyZoo(hub, load_catalog(catalog_path), catalog_path, tmp_path / "hub-cache", delta_dir, delta, commits)
        if with_base:
            zoo.publish_base()
        yield zoo


def pull_from_local_hub(
    variant_id: str, files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
):
    """The bundled catalog's variant pulled, as ``zootui pull`` does, from a local Hub publishing ``files``
    as its repo (weights and tokenizer models as LFS files); returns the model and the store."""
    from tui.zoo.library import RegisteredModel

    catalog = load_catalog()
    _, variant = catalog.variant(variant_id)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_repo(variant.hub_id, files, lfs={name for name in files if name.endswith(_WEIGHT_SUFFIXES)})
        store = Store(data_dir / DATABASE_NAME)
        jobs = Jobs(store, data_dir, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        model: RegisteredModel = jobs.get_model(variant_id)
    return model, store
