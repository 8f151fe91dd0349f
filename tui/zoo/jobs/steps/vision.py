"""vision: write the vision file of a variant that sees images (MiniGPT-4): the BLIP-2 vision tower and
Q-Former with the variant's projection, in one GGUF that the embeddings engine loads beside the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.zoo.jobs.errors import JobError, from_conversion_error
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.download import Downloaded, RepoRole
from tui.zoo.library import VISION_SUFFIX


@dataclass(frozen=True)
class VisionWritten(StepResult):
    step = StepName.VISION

    vision: Path


class Vision(Step[VisionWritten]):
    result_type = VisionWritten

    def run(self, context: StepContext) -> VisionWritten:
        import converters

        downloaded = context.result(Downloaded)
        tower = downloaded.of(RepoRole.VISION)[-1]
        projection = downloaded.of(RepoRole.PROJECTION)[0]
        file = context.variant.projection_file
        if file not in projection.files:
            raise JobError(f"{projection.repo} has no {file}; the catalog entry names a file the repo lacks")
        out = context.fresh_output(context.work_dir / f"{context.build.name}{VISION_SUFFIX}")
        try:
            converters.convert_vision(
                tower.directory,
                projection.directory / file,
                out,
                provenance={
                    "vision": {"repo": tower.repo, "revision": tower.revision},
                    "projection": {"repo": projection.repo, "revision": projection.revision},
                },
                progress=context.converter_progress,
                cancel=context.cancel,
            )
        except converters.ConversionError as error:
            raise from_conversion_error(error) from error
        return VisionWritten(out)


def built_vision(context: StepContext) -> Path | None:
    """The vision file the job wrote to load with its GGUF; None for a text-only model."""
    return context.result(VisionWritten).vision if context.has(StepName.VISION) else None
