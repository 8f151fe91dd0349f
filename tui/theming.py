"""The project's own themes, read from TOML files in the themes directory."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from textual.theme import Theme

from tui.compat import tomllib

THEME_KEYS = {
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "dark",
    "luminosity_spread",
    "text_alpha",
    "variables",
}


def load_themes() -> tuple[list[Theme], list[str]]:
    """Themes from the packaged themes directory, and one warning per file that could not be used."""
    themes: list[Theme] = []
    warnings: list[str] = []
    for resource in sorted(files("tui.themes").iterdir(), key=lambda item: item.name):
        if not resource.name.endswith(".toml"):
            continue
        try:
            document = tomllib.loads(resource.read_text(encoding="utf-8"))
            unknown = set(document) - THEME_KEYS
            if unknown:
                raise ValueError(f"unknown keys {', '.join(sorted(unknown))}")
            themes.append(Theme(name=Path(resource.name).stem, **document))
        except (tomllib.TOMLDecodeError, ValueError, TypeError) as error:
            warnings.append(f"theme {resource.name} skipped: {error}")
    return themes, warnings
