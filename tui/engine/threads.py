"""How many CPU threads llama.cpp gets: physical cores, one left for everything else when there are few.

llama.cpp's threads meet at a spinning barrier for every layer, so a thread that has to share its core
with the UI, a browser or a build holds all the others up while they spin. With every CPU in use (the old
default) a reply on a 2-core machine beside one busy process ran at 57 tok/s against 156 with one thread,
and on a machine loaded 13 deep a prompt was read at 27 tok/s with two threads against 79 with one
(tests/bench/bench_chat.py measures both choices, idle and under load). So replies use the physical cores
less one when there are four or fewer. Prompts do the same, except where hyperthreads are left over for
the rest of the machine: then every physical core reads the prompt (the screen is idle meanwhile), which
on an idle machine is up to twice as fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# With this many physical cores or fewer, decoding leaves one of them to the UI and everything else.
FEW_CORES = 4
SYSFS_CPUS = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class ThreadPlan:
    decode: int
    """Threads that generate a reply, token by token."""
    batch: int
    """Threads that evaluate a prompt."""
    physical_cores: int
    automatic: bool
    """True when neither count was set in the config."""

    def summary(self) -> str:
        counts = f"{self.decode} for replies, {self.batch} for prompts"
        if self.automatic:
            return f"{counts} (auto: {self.physical_cores} physical cores)"
        return f"{counts} (set in [engine])"


def usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int] | None = None, sysfs: Path = SYSFS_CPUS) -> int:
    """Physical cores among the CPUs this process may run on; hyperthread siblings count once."""
    cpus = usable_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:  # no sysfs (macOS, some containers): count logical CPUs
            return max(len(cpus), 1)
        cores.add((package, core))
    return max(len(cores), 1)


def thread_plan(
    n_threads: int = 0, n_threads_batch: int = 0, cores: int | None = None, logical: int | None = None
) -> ThreadPlan:
    """The thread counts to use; 0 for either setting picks it from the machine (``cores`` physical cores
    and ``logical`` CPUs, read from it when not given)."""
    cores = physical_cores() if cores is None else cores
    logical = len(usable_cpus()) if logical is None else logical
    auto_decode = cores - 1 if 1 < cores <= FEW_CORES else cores
    return ThreadPlan(
        decode=n_threads or auto_decode,
        batch=n_threads_batch or (cores if logical > cores else auto_decode),
        physical_cores=cores,
        automatic=not n_threads and not n_threads_batch,
    )
