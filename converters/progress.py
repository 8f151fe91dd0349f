"""Progress reports shared by the converter, the quantizer, the CLI and the TUI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    tensor: str
    stage: str  # "convert" (checkpoint -> GGUF), then "quantize" for types llama.cpp quantizes

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0


ProgressCallback = Callable[[Progress], None]


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class ConsoleProgress:
    """Renders Progress reports: a redrawn bar on a terminal, plain lines otherwise.

    Plain lines are rate-limited (one per stage change or per `line_interval` seconds)
    so that logs of large conversions stay readable.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30, line_interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty()
        self.width = width
        self.line_interval = line_interval
        self._last_stage = ""
        self._last_line_at = 0.0

    def __call__(self, p: Progress) -> None:
        done = min(p.bytes_done, p.bytes_total)
        if self.is_tty:
            filled = int(self.width * p.fraction)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(
                f"\r{p.stage:<8} [{bar}] {p.fraction:6.1%} {_mib(done)} / {_mib(p.bytes_total)}  {p.tensor[:40]:<40}"
            )
            if done >= p.bytes_total:
                self.stream.write("\n")
            self.stream.flush()
            return
        now = time.monotonic()
        finished = done >= p.bytes_total
        if p.stage != self._last_stage or finished or now - self._last_line_at >= self.line_interval:
            self.stream.write(f"{p.stage}: {p.fraction:.1%} ({_mib(done)} of {_mib(p.bytes_total)}) {p.tensor}\n")
            self.stream.flush()
            self._last_stage = p.stage
            self._last_line_at = now
