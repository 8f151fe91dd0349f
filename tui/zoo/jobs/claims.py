"""One job per target across processes: the process running a job holds its claim, a ``tui.locks`` lock
that the kernel drops when that process ends, however it ends.

A second try at the same target (``zootui pull`` twice, or the browser and the CLI) is told who has it
instead of sharing or duplicating the job; ``running_jobs`` is what every process sees as running.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tui.locks import ProcessLock, is_held, locks_dir
from tui.store import Job, JobKind, JobState, Store
from tui.zoo.jobs.errors import JobError


def claim_path(data_dir: Path, kind: JobKind, target: str, quant: str) -> Path:
    key = hashlib.sha256(f"{kind}\0{target}\0{quant}".encode()).hexdigest()[:24]
    return locks_dir(data_dir) / f"job-{key}.lock"


@contextmanager
def claimed(data_dir: Path, kind: JobKind, target: str, quant: str) -> Iterator[None]:
    """Hold the claim on ``target`` as ``quant`` for the block; JobError at once when someone holds it."""
    claim = ProcessLock(claim_path(data_dir, kind, target, quant))
    if not claim.acquire():
        what = Path(target).name if kind is JobKind.CHECKPOINT else target
        raise JobError(
            f"{what} as {quant} is already being built by another job (in this zootui or another one); "
            "let it finish, or cancel it there, and run this again to use or resume it"
        )
    try:
        yield
    finally:
        claim.release()


def running_jobs(store: Store, data_dir: Path) -> list[Job]:
    """The jobs some process is running now. A job recorded as running whose claim nobody holds was cut off
    (a killed process): it is not among them, and it resumes when it is run again."""
    return [
        job
        for job in store.jobs(unfinished_only=True)
        if job.state is JobState.RUNNING and is_held(claim_path(data_dir, job.kind, job.target, job.quant))
    ]
