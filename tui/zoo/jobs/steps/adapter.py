"""adapter: write the variant's own LoRA adapter as a GGUF LoRA (float32) for the base GGUF it goes with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.zoo.jobs.errors import from_conversion_error
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.download import Downloaded
from tui.zoo.jobs.steps.recover import base_model
from tui.zoo.library import LORA_ADAPTER_SUFFIX


@dataclass(frozen=True)
class AdapterWritten(StepResult):
    step = StepName.ADAPTER

    adapter: Path


class Adapter(Step[AdapterWritten]):
    result_type = AdapterWritten

    def run(self, context: StepContext) -> AdapterWritten:
        from converters import ConversionError, read_config, recover

        published = context.result(Downloaded).model.directory
        out = context.fresh_output(context.work_dir / f"{context.build.name}{LORA_ADAPTER_SUFFIX}")
        # The base's config gives the architecture, whose tensor names and row order the adapter must match.
        try:
            base_config = read_config(base_model(context))
            recover.write_lora_gguf(published, base_config, out)
        except ConversionError as error:
            raise from_conversion_error(error) from error
        context.report(1, 1, out.name)
        return AdapterWritten(out)


def built_adapter(context: StepContext) -> Path | None:
    """The adapter the job wrote to load with its GGUF; None when it keeps none."""
    return context.result(AdapterWritten).adapter if context.has(StepName.ADAPTER) else None
