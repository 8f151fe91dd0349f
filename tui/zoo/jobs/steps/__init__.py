"""Every job step, by name. A new step is a module here with its ``Step`` and ``StepResult``, a member of
``StepName``, an entry below, and its place in ``tui.zoo.jobs.plan``."""

from __future__ import annotations

from tui.zoo.jobs.step import Step, StepName
from tui.zoo.jobs.steps.adapter import Adapter, AdapterWritten
from tui.zoo.jobs.steps.convert import Convert, Converted
from tui.zoo.jobs.steps.download import Download, Downloaded, DownloadedRepo, RepoRole
from tui.zoo.jobs.steps.quantize import Quantize, Quantized
from tui.zoo.jobs.steps.read import CheckpointRead, Read
from tui.zoo.jobs.steps.recover import Recover, Recovered
from tui.zoo.jobs.steps.register import Register, Registered
from tui.zoo.jobs.steps.smoke_test import SmokeTest, SmokeTested
from tui.zoo.jobs.steps.vision import Vision, VisionWritten

STEPS: dict[StepName, Step] = {
    step.name: step
    for step in (Download(), Read(), Recover(), Convert(), Quantize(), Adapter(), Vision(), SmokeTest(), Register())
}

__all__ = [
    "STEPS",
    "AdapterWritten",
    "CheckpointRead",
    "Converted",
    "Downloaded",
    "DownloadedRepo",
    "Quantized",
    "Recovered",
    "Registered",
    "RepoRole",
    "SmokeTested",
    "VisionWritten",
]
