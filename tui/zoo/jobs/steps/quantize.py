"""quantize: the converted f16 GGUF to the job's type, through llama.cpp's quantizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.zoo.jobs.errors import from_conversion_error
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.convert import Converted


@dataclass(frozen=True)
class Quantized(StepResult):
    step = StepName.QUANTIZE

    gguf: Path


class Quantize(Step[Quantized]):
    result_type = Quantized

    def run(self, context: StepContext) -> Quantized:
        # ``import converters``: ``converters.quantize`` is the function it exports (and a module of the same name).
        import converters

        out = context.fresh_output(context.work_dir / f"{context.build.name}.gguf")
        try:
            converters.quantize(
                context.result(Converted).gguf,
                out,
                context.build.quant,
                progress=context.converter_progress,
                cancel=context.cancel,
            )
        except converters.ConversionError as error:
            raise from_conversion_error(error) from error
        return Quantized(out)


def built_gguf(context: StepContext) -> Path:
    """The job's model GGUF: quantized, or written by convert directly."""
    return context.result(Quantized if context.has(StepName.QUANTIZE) else Converted).gguf
