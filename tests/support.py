"""Helpers the tests share (a plain module: `conftest` names clash between test directories)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def zootui_command(*args: str) -> list[str]:
    """Run the CLI of this checkout the way an installed `zootui` does."""
    return [sys.executable, "-m", "tui", *args]
