"""What a lockfile records about how a model was made: tool versions and the time."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the output."""
    import converters
    from tui import __version__

    found = {"zootui": __version__, "converters": converters.__version__}
    for package in ("llama_cpp_python", "gguf", "huggingface_hub"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
