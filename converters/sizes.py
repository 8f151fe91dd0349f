"""Byte counts as people read them, in a unit that shows the number (never "0.0 GB")."""

from __future__ import annotations

_UNITS = ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def human_size(n: int) -> str:
    for factor, unit in _UNITS:
        if abs(n) >= factor:
            return f"{n / factor:.2f} {unit}" if factor == 2**30 else f"{n / factor:.1f} {unit}"
    return f"{n} bytes"
