"""The tiny MiniGPT-4 for tests: the committed vision fixture (tests/fixtures/tiny/minigpt4, made by
tests/fixtures/make_tiny_minigpt4.py) converted to a vision file, and the committed tiny LLaMA
converted to an f32 GGUF carrying MiniGPT-4's prompt format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from support import ROOT

from converters import convert, convert_vision
from tui.zoo.templates import prompt_format

FIXTURE = ROOT / "tests" / "fixtures" / "tiny" / "minigpt4"
BLIP2 = FIXTURE / "blip2"
PROJECTION = FIXTURE / "pretrained_minigpt4.pth"
IMAGES = FIXTURE / "images"
GRADIENT = IMAGES / "gradient.png"
NOISE = IMAGES / "noise-rgba.png"
TINY_LLAMA = ROOT / "tests" / "fixtures" / "tiny" / "llama"
QUESTION = "What animal is this?"
"""The question the reference prompt asks about the gradient picture."""


def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return {name: data[name] for name in data.files}


def build_vision_file(out: Path) -> Path:
    return convert_vision(BLIP2, PROJECTION, out)


def build_language_model(out: Path, outtype: str = "f32") -> Path:
    chosen = prompt_format("minigpt4")
    return convert(
        TINY_LLAMA, out, outtype=outtype, chat_template=chosen.template, stop_strings=chosen.stop, nthreads=1
    )


def build_model_pair(directory: Path, name: str = "tiny-minigpt4") -> Path:
    """``<name>.gguf`` with ``<name>.vision.gguf`` beside it, as the library keeps a MiniGPT-4 build."""
    directory.mkdir(parents=True, exist_ok=True)
    build_vision_file(directory / f"{name}.vision.gguf")
    return build_language_model(directory / f"{name}.gguf")
