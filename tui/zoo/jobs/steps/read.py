"""read: check that a local directory is a checkpoint the converter reads, and hash its input files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.zoo.jobs.errors import JobError
from tui.zoo.jobs.hashing import hash_files
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult


@dataclass(frozen=True)
class CheckpointRead(StepResult):
    step = StepName.READ

    directory: Path
    files: dict[str, str]
    """sha256 of each file the conversion reads, keyed by its path in the directory."""


class Read(Step[CheckpointRead]):
    result_type = CheckpointRead

    def run(self, context: StepContext) -> CheckpointRead:
        from converters import ConversionError, checkpoint_input_files

        directory = context.build.checkpoint
        assert directory is not None, "read is a step of checkpoint jobs"
        try:
            files = checkpoint_input_files(directory)
        except ConversionError as error:
            raise JobError(str(error)) from error
        return CheckpointRead(directory, hash_files(context, files, directory, directory.name))
