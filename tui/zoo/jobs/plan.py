"""Which steps a job has, in order.

A catalog job runs download → recover → convert → quantize → smoke_test → register; recover is left
out for full releases and quantize for types the converter writes directly (f32, f16, bf16, q8_0).
A LoRA variant got with ``LoraMode.RUNTIME`` keeps its adapter out of the weights: recover merges
only its ``merge_first`` chain (and is left out without one), and "adapter" writes the variant's own
adapter as a GGUF LoRA before the smoke test, which loads both. A variant that sees images
(MiniGPT-4) has a "vision" step before the smoke test, which writes its vision file. Importing a
checkpoint directory runs read → convert → quantize → smoke_test → register. A chatglm.cpp variant's
converter writes every type it has, so it never quantizes.
"""

from __future__ import annotations

from tui.zoo.catalog import Recipe, Runtime, Variant
from tui.zoo.jobs.build import LoraMode
from tui.zoo.jobs.step import StepName


def catalog_steps(variant: Variant, quant: str, lora: LoraMode = LoraMode.MERGE) -> list[StepName]:
    keeps_adapter = lora is LoraMode.RUNTIME
    recovers = variant.recipe is not Recipe.NONE and not (keeps_adapter and not variant.merge_first)
    build = _build_steps(quant, variant.runtime)
    if keeps_adapter:
        build.insert(build.index(StepName.SMOKE_TEST), StepName.ADAPTER)
    if variant.sees_images:
        build.insert(build.index(StepName.SMOKE_TEST), StepName.VISION)
    return [StepName.DOWNLOAD, *([StepName.RECOVER] if recovers else []), *build]


def checkpoint_steps(quant: str) -> list[StepName]:
    return [StepName.READ, *_build_steps(quant)]


def quantizes(quant: str, runtime: Runtime = Runtime.LLAMA_CPP) -> bool:
    """Whether a ``quant`` build has a quantize step, reading an f16 GGUF the convert step writes first."""
    from converters import DIRECT_OUTTYPES

    return runtime is Runtime.LLAMA_CPP and quant.lower() not in DIRECT_OUTTYPES


def _build_steps(quant: str, runtime: Runtime = Runtime.LLAMA_CPP) -> list[StepName]:
    quantize = [StepName.QUANTIZE] if quantizes(quant, runtime) else []
    return [StepName.CONVERT, *quantize, StepName.SMOKE_TEST, StepName.REGISTER]
