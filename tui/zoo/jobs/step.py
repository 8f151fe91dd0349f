"""What every job step is: a named unit that reads a typed ``StepContext`` and returns a typed ``StepResult``.

A result is stored in SQLite as a JSON record (``to_record``) when its step finishes and read back
(``from_record``) by later steps and later runs; the record's keys are the result's field names, the
same ones earlier releases stored, so jobs they left unfinished still resume.
"""

from __future__ import annotations

import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_type_hints

from tui.compat import StrEnum
from tui.store import Job
from tui.zoo.catalog import Variant
from tui.zoo.jobs.build import Build
from tui.zoo.jobs.errors import JobCancelled, JobError


class StepName(StrEnum):
    """The steps jobs are made of; the value is what ``job_steps.name`` stores."""

    DOWNLOAD = "download"
    READ = "read"
    RECOVER = "recover"
    CONVERT = "convert"
    QUANTIZE = "quantize"
    ADAPTER = "adapter"
    VISION = "vision"
    SMOKE_TEST = "smoke_test"
    REGISTER = "register"

    @property
    def title(self) -> str:
        """The step as users read it: "smoke test"."""
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class JobProgress:
    """One report from a running job."""

    job_id: int
    step: StepName
    index: int
    """1-based position of ``step`` among the job's ``total`` steps."""
    total: int
    bytes_done: int
    bytes_total: int
    detail: str
    """What is being worked on: a file, a tensor, or the step's result."""

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0


JobProgressCallback = Callable[[JobProgress], None]


@dataclass(frozen=True)
class StepResult:
    """What a finished step produced. Subclasses are frozen dataclasses of JSON values and paths."""

    step: ClassVar[StepName]

    def to_record(self) -> dict[str, Any]:
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]):
        hints = get_type_hints(cls)
        return cls(**{f.name: _from_json(hints[f.name], record[f.name]) for f in fields(cls)})

    def outputs(self) -> list[Path]:
        """Files and directories the result stands for; when one has vanished the step is redone."""
        return [value for f in fields(self) if isinstance(value := getattr(self, f.name), Path)]


def _to_json(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _from_json(kind: Any, value: Any) -> Any:
    is_path = kind is Path or Path in get_args(kind)
    return Path(value) if is_path and value is not None else value


R = TypeVar("R", bound=StepResult)


class StepContext:
    """What a running step may use: the build, earlier steps' results, its work dir, progress and cancel."""

    def __init__(
        self,
        job: Job,
        build: Build,
        data_dir: Path,
        hub_cache: Path | None,
        hub_token: str | bool | None,
        progress: JobProgressCallback | None,
        cancel: threading.Event,
    ) -> None:
        self.job = job
        self.build = build
        self.data_dir = data_dir
        self.hub_cache = hub_cache
        self.hub_token = hub_token
        self.progress = progress
        self.cancel = cancel
        self.position = 0

    @property
    def step(self) -> StepName:
        return StepName(self.job.steps[self.position].name)

    @property
    def variant(self) -> Variant:
        """The catalog variant of a catalog job (steps that only catalog jobs have use this)."""
        if self.build.variant is None:
            raise JobError(f"{self.step.title}: job {self.job.id} builds no catalog variant")
        return self.build.variant

    @property
    def work_dir(self) -> Path:
        """Where the job keeps its intermediates until it is done."""
        return self.data_dir / "work" / str(self.job.id)

    def report(self, done: int, total: int, detail: str = "") -> None:
        """Report progress; raises JobCancelled once cancel is set (steps without their own switch stop here)."""
        if self.cancel.is_set():
            raise JobCancelled()
        if self.progress is not None:
            self.progress(
                JobProgress(self.job.id, self.step, self.position + 1, len(self.job.steps), done, total, detail)
            )

    def converter_progress(self, report: Any) -> None:
        """Adapter for ``converters.Progress`` reports."""
        self.report(report.bytes_done, report.bytes_total, report.tensor)

    def has(self, step: StepName) -> bool:
        return any(s.name == step for s in self.job.steps)

    def result(self, kind: type[R]) -> R:
        """The result an earlier step of this job recorded."""
        record = next(s.result for s in self.job.steps if s.name == kind.step and s.result is not None)
        return kind.from_record(record)

    def fresh_output(self, path: Path) -> Path:
        """``path``, cleared of what an earlier, cut-short try of this step left there."""
        remove_with_leftovers(path)
        return path


class Step(ABC, Generic[R]):
    """One unit of a job. ``run`` does the work and returns what later steps and the lockfile need."""

    result_type: ClassVar[type[StepResult]]

    @property
    def name(self) -> StepName:
        return self.result_type.step

    @abstractmethod
    def run(self, context: StepContext) -> R: ...

    def still_there(self, record: dict[str, Any]) -> bool:
        """Every output the step recorded still exists (else it is redone)."""
        return all(path.exists() for path in self.result_type.from_record(record).outputs())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_with_leftovers(path: Path) -> None:
    """Remove a step's output and what a cut-short write of it left: the converters, the recovery
    recipes and the quantizer all write to ``.<name>.<something>`` beside the final name."""
    _remove(path)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*"):
            _remove(leftover)
