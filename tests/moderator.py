"""A tiny GPT-J-shaped moderation model whose answer the test chooses.

The checkpoint has GPT-J's layout and the committed gptj fixture's tokenizer and config, with
weights set so that it answers one label to any message: attention and MLP are zero, so each
position's output depends on its own token only, and the embedding and lm_head chain the tokens
"<last token of the prompt> -> <the label's tokens> -> newline". Any other token leads to a newline
(the output bias). It runs through the real converter (GPT-J as phi2) and llama.cpp like the real
GPT-JT-Moderation-6B, which answers its prompt the same way: a label and a newline.
"""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
from support import ROOT

from converters import convert, open_checkpoint
from converters.recover import OutputTensor, SafetensorsWriter
from tui.zoo.library import Lockfile, lockfile_path, registered_path
from tui.zoo.templates import PromptTokenizer, prompt_format

GPTJ = ROOT / "tests" / "fixtures" / "tiny" / "gptj"
FORMAT = "openchatkit_moderation"
MODERATOR_REPO = "togethercomputer/GPT-JT-Moderation-6B"
# A message's own tokens do not reach the last prompt token ("…\nOutput:"), so any message works here.
SAMPLE_MESSAGE = "Is the zoo open today?"


def _layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return (x - x.mean()) / np.sqrt(x.var() + eps)


def _chain(vocab_gguf: Path, label: str) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(vocab_gguf), vocab_only=True, verbose=False)
    try:
        prompt = PromptTokenizer(llm).tokenize(prompt_format(FORMAT).template, [{"role": "user", "content": "x"}])
        answer = llm.tokenize(f" {label}\n".encode(), add_bos=False, special=False)
    finally:
        llm.close()
    chain = [prompt[-1], *answer]
    assert len(set(chain)) == len(chain), f"{label!r} repeats a token; a one-token-memory model cannot say it"
    return chain


def write_moderator(directory: Path, label: str, work: Path) -> Path:
    """A Hugging Face GPT-J checkpoint in ``directory`` that answers ``label``."""
    vocab_gguf = convert(GPTJ, work / "gptj-vocab.gguf", outtype="f16", nthreads=1)
    chain = _chain(vocab_gguf, label)
    config = json.loads((GPTJ / "config.json").read_text("utf-8"))
    d, n_vocab = config["n_embd"], config["vocab_size"]
    with open_checkpoint(GPTJ) as fixture:
        tensors = {
            name: np.zeros(fixture.info(name).shape, np.float32)
            for name in fixture.names()
            if not name.endswith(("attn.bias", "attn.masked_bias"))
        }
    for name in tensors:
        if ".ln_" in name and name.endswith(".weight"):
            tensors[name][:] = 1.0
    embedding, head, bias = tensors["transformer.wte.weight"], tensors["lm_head.weight"], tensors["lm_head.bias"]
    for position, (token, following) in enumerate(pairwise(chain)):
        embedding[token, position] = 1.0
        head[following] = _layer_norm(embedding[token])  # scores d for the right next token, about -1 for others
    bias[chain[-1]] = 1.0  # a token outside the chain is followed by the newline
    assert embedding.shape == (n_vocab, d)
    directory.mkdir(parents=True)
    plan = [OutputTensor(name, array.shape, "F32") for name, array in tensors.items()]
    with SafetensorsWriter(directory, plan) as writer:
        for name, array in tensors.items():
            writer.write(name, array)
        writer.finish()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(GPTJ / name, directory / name)
    return directory


def install(data_dir: Path, name: str, checkpoint: Path, format_name: str) -> str:
    """Convert ``checkpoint`` into the library under ``name`` with a catalog prompt format, as a pull records it."""
    chosen = prompt_format(format_name)
    path = registered_path(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    convert(
        checkpoint,
        path,
        outtype="f16",
        chat_template=chosen.template,
        eos_token=chosen.eos,
        stop_strings=chosen.stop,
        nthreads=1,
    )
    lockfile = Lockfile(name=name, quant="f16", output_sha256="", prompt_format=format_name, stop=list(chosen.stop))
    lockfile_path(path).write_text(lockfile.to_json(), "utf-8")
    return name


def install_moderator(data_dir: Path, label: str, work: Path) -> str:
    """A moderator answering ``label``, in the library as a catalog moderation model would be; its name."""
    name = f"moderator-{label.replace(' ', '-')}"
    return install(data_dir, name, write_moderator(work / name, label, work), FORMAT)


def install_chat_model(data_dir: Path) -> str:
    """The tiny GPT-J fixture as a Dolly v1 chat model: a quick real llama.cpp model for the conversations."""
    return install(data_dir, "tiny-dolly", GPTJ, "dolly")
