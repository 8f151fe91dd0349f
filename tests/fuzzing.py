"""Hypothesis profiles for the parser fuzz tests (tests/*/test_fuzz_*.py).

The suite runs the "suite" profile: derandomized (the same examples on every run and machine), a
bounded number of examples and no example database, so it is a fixed, quick regression check.
`ZOOTUI_FUZZ=long` runs the "long" profile: random, many more examples, for a search session.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from hypothesis import HealthCheck, event, settings

from converters import Checkpoint, ConversionError, open_checkpoint

settings.register_profile(
    "suite",
    derandomize=True,
    max_examples=150,
    deadline=None,  # the machine is shared; time is bounded by each test's own generous check
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("long" if os.environ.get("ZOOTUI_FUZZ") == "long" else "suite")

# One example is a few KB of input: anything slower than this, or growing memory by more, is a bug.
EXAMPLE_SECONDS = 10.0
EXAMPLE_GROWTH_KIB = 512 * 1024


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_or_refuse(directory: Path) -> Checkpoint | None:
    """The checkpoint, or None when the reader refused it with its one-line ConversionError."""
    try:
        checkpoint = open_checkpoint(directory)
    except ConversionError as error:
        assert "\n" not in str(error)
        event("refused")
        return None
    event("accepted")
    return checkpoint
