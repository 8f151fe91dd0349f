"""Jobs: get a model from the catalog (or a local checkpoint) into the library, resumably.

A job is a list of steps (``plan``), each a small unit (``steps/``, one module per step) that reads
the job's typed description (``build.Build``) and earlier steps' typed results through a
``step.StepContext`` and returns its own ``step.StepResult``, which SQLite keeps. ``runner.Jobs``
starts, resumes and runs them; a killed job resumes at its first unfinished step.

The CLI and the TUI (from a thread worker) share this package: progress goes to one callback as
``JobProgress`` and cancellation comes through a ``threading.Event``. Every failure ends the job in
a recorded state and reaches the caller as ``JobError`` with one line; what earlier steps produced
is kept for the next try.

``converters`` and ``llama_cpp`` are imported inside the steps that use them, so that importing
this package (the model browser does) stays cheap.
"""

from __future__ import annotations

from tui.zoo.jobs.build import DEFAULT_QUANT, LoraMode, default_quant
from tui.zoo.jobs.errors import JobCancelled, JobError
from tui.zoo.jobs.plan import catalog_steps, checkpoint_steps
from tui.zoo.jobs.runner import Jobs
from tui.zoo.jobs.step import JobProgress, JobProgressCallback, StepName
from tui.zoo.jobs.steps.recover import RECIPES
from tui.zoo.library import RegisteredModel

__all__ = [
    "DEFAULT_QUANT",
    "RECIPES",
    "JobCancelled",
    "JobError",
    "JobProgress",
    "JobProgressCallback",
    "Jobs",
    "LoraMode",
    "RegisteredModel",
    "StepName",
    "catalog_steps",
    "checkpoint_steps",
    "default_quant",
]
