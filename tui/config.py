"""User configuration: one TOML file, every key documented with its default.

The settings classes below are the reference: each field's ``doc`` is what
``zootui config show`` prints and what the README's config reference lists.
A malformed file or a bad value never stops the app: it yields one warning
line naming the file, the key and the fix, and the default is used instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tui.compat import tomllib

APP_NAME = "zootui"
DATA_DIR_ENV = "ZOOTUI_DATA_DIR"
CONFIG_FILE_ENV = "ZOOTUI_CONFIG_FILE"


def _setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    return field(default=default, metadata={"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices})


@dataclass(frozen=True)
class EngineSettings:
    n_ctx: int = _setting(
        4096,
        "Context length (tokens) a local model is loaded with; a tab may ask for more.",
        minimum=256,
        maximum=1_048_576,
    )
    n_threads: int = _setting(
        0,
        "CPU threads that generate replies; 0 uses the physical cores, leaving one free when there are "
        "four or fewer (busy cores slow every thread down).",
        minimum=0,
        maximum=1024,
    )
    n_threads_batch: int = _setting(
        0,
        "CPU threads that evaluate prompts; 0 uses every physical core when hyperthreads are left over, "
        "else as many as n_threads.",
        minimum=0,
        maximum=1024,
    )
    n_gpu_layers: int = _setting(
        0, "Layers offloaded to the GPU; 0 runs on the CPU only, -1 offloads all.", minimum=-1, maximum=100_000
    )
    n_batch: int = _setting(512, "Prompt tokens evaluated per batch.", minimum=1, maximum=65_536)
    flash_attn: bool = _setting(True, "Use flash attention (faster decoding on CPU and GPU).")
    state_cache_mb: int = _setting(
        1024,
        "RAM kept for the evaluated history of recent conversations, so "
        "switching back to a tab does not re-read its whole history.",
        minimum=0,
        maximum=1_048_576,
    )


@dataclass(frozen=True)
class RemoteSettings:
    url: str = _setting(
        "http://127.0.0.1:8080/v1",
        "Base URL of an OpenAI-compatible server (llama.cpp server, vLLM, Ollama); "
        "chat with it by choosing the model remote:NAME.",
    )
    api_key_env: str = _setting(
        "ZOOTUI_REMOTE_API_KEY", "Environment variable holding the server's API key (never stored in this file)."
    )
    timeout: float = _setting(600.0, "Seconds to wait for the server before giving up.", minimum=1, maximum=86_400)


@dataclass(frozen=True)
class ChatSettings:
    default_model: str = _setting(
        "smollm2-135m-instruct", "Model for new conversations: a library name, a path to a .gguf file, or remote:NAME."
    )
    system_prompt: str = _setting("", "System prompt for new conversations (empty: none).")
    temperature: float = _setting(0.7, "Sampling temperature; 0 is greedy.", minimum=0.0, maximum=5.0)
    top_p: float = _setting(
        0.95,
        "Nucleus sampling: keep the smallest set of tokens whose probability reaches this.",
        minimum=0.0,
        maximum=1.0,
    )
    top_k: int = _setting(
        40, "Sample among the k most likely tokens; 0 disables the limit.", minimum=0, maximum=100_000
    )
    repeat_penalty: float = _setting(
        1.1, "Penalty for repeating recent tokens; 1.0 disables it.", minimum=0.0, maximum=10.0
    )
    max_tokens: int = _setting(1024, "Longest reply, in tokens.", minimum=1, maximum=1_048_576)
    seed: int = _setting(
        -1, "Random seed for sampling; -1 picks a new one for every reply.", minimum=-1, maximum=2**31 - 1
    )


@dataclass(frozen=True)
class UISettings:
    theme: str = _setting(
        "textual-dark", "Theme at start until one is picked from the command palette (that choice is remembered)."
    )


@dataclass(frozen=True)
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    ui: UISettings = field(default_factory=UISettings)


SECTION_DOCS = {
    "engine": "Local inference through llama.cpp.",
    "remote": "An OpenAI-compatible server, for models that outgrow this machine.",
    "chat": "Defaults for new conversations; each tab can change its own.",
    "ui": "Appearance.",
}


def config_path() -> Path:
    override = os.environ.get(CONFIG_FILE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP_NAME) / "config.toml"


def data_dir() -> Path:
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        from platformdirs import user_data_path

        path = user_data_path(APP_NAME)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    path: Path
    warnings: tuple[str, ...] = ()


def _check_value(fix_prefix: str, meta_field, value: Any) -> tuple[Any, str | None]:
    """Return the value converted to the field's type, or an error line starting with ``fix_prefix``
    (what names the value: the file and key, or the command-line option)."""
    expected = type(meta_field.default)
    if expected is bool:
        if not isinstance(value, bool):
            return None, f"{fix_prefix} is not true or false; set it to true or false."
        return value, None
    if expected in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (expected is int and isinstance(value, float))
        ):
            kind = "a whole number" if expected is int else "a number"
            return None, f"{fix_prefix} is not {kind}; set it to {kind}."
        low, high = meta_field.metadata["minimum"], meta_field.metadata["maximum"]
        if (low is not None and value < low) or (high is not None and value > high):
            return None, f"{fix_prefix} is out of range; use a value from {low} to {high}."
        return expected(value), None
    if not isinstance(value, str):
        return None, f"{fix_prefix} is not text; put it in quotes."
    choices = meta_field.metadata["choices"]
    if choices and value not in choices:
        return None, f"{fix_prefix} is not one of {', '.join(choices)}."
    return value, None


def parse_settings(document: dict, path: Path) -> tuple[Settings, list[str]]:
    warnings: list[str] = []
    sections: dict[str, Any] = {}
    known_sections = {f.name: f for f in fields(Settings)}
    for section_name, table in document.items():
        if section_name not in known_sections:
            warnings.append(
                f"{path}: unknown section [{section_name}] ignored; "
                f"valid sections are {', '.join('[' + s + ']' for s in known_sections)}."
            )
            continue
        if not isinstance(table, dict):
            warnings.append(f"{path}: {section_name} must be a [{section_name}] table; ignored.")
            continue
        section_class = known_sections[section_name].default_factory
        section_fields = {f.name: f for f in fields(section_class)}
        values = {}
        for key, value in table.items():
            meta_field = section_fields.get(key)
            if meta_field is None:
                warnings.append(
                    f"{path}: unknown key [{section_name}] {key} ignored; valid keys are {', '.join(section_fields)}."
                )
                continue
            checked, error = _check_value(f"{path}: [{section_name}] {key} = {value!r}", meta_field, value)
            if error:
                warnings.append(error + f" Using the default {meta_field.default!r}.")
            else:
                values[key] = checked
        sections[section_name] = section_class(**values)
    return Settings(**sections), warnings


def load_config(path: Path | None = None) -> LoadedConfig:
    """Read the config file; never raises for problems a user can cause."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LoadedConfig(Settings(), path)
    except (OSError, UnicodeDecodeError) as error:
        return LoadedConfig(
            Settings(),
            path,
            (f"{path}: cannot be read ({error}); using defaults. Fix its permissions or encoding (UTF-8).",),
        )
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return LoadedConfig(
            Settings(), path, (f"{path}: invalid TOML ({error}); using defaults. Fix the syntax or delete the file.",)
        )
    settings, warnings = parse_settings(document, path)
    return LoadedConfig(settings, path, tuple(warnings))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return repr(value)


def render_toml(settings: Settings, *, with_docs: bool = True) -> str:
    """The settings as a TOML document; with docs, every key carries its meaning and default."""
    lines: list[str] = []
    for section_field in fields(Settings):
        section = getattr(settings, section_field.name)
        if with_docs:
            lines.append(f"# {SECTION_DOCS[section_field.name]}")
        lines.append(f"[{section_field.name}]")
        for meta_field in fields(section):
            if with_docs:
                lines.append(f"# {meta_field.metadata['doc']} Default: {_toml_value(meta_field.default)}.")
            lines.append(f"{meta_field.name} = {_toml_value(getattr(section, meta_field.name))}")
        lines.append("")
    return "\n".join(lines)


def with_overrides(settings: Settings, section: str, **values: Any) -> Settings:
    """Settings with some keys of one section replaced (values of None are left alone)."""
    chosen = {key: value for key, value in values.items() if value is not None}
    if not chosen:
        return settings
    return replace(settings, **{section: replace(getattr(settings, section), **chosen)})


def check_option(section_class: type, name: str, value: Any, option: str) -> Any:
    """A command-line value for a setting, checked as the config file's value is: ValueError with one line
    naming the option, its value and the range."""
    meta_field = next(f for f in fields(section_class) if f.name == name)
    checked, error = _check_value(f"{option} {value!r}", meta_field, value)
    if error:
        raise ValueError(error)
    return checked


def setting_bounds(section_class: type, name: str) -> tuple[float | None, float | None]:
    """The minimum and maximum a setting accepts (either may be None)."""
    meta_field = next(f for f in fields(section_class) if f.name == name)
    return meta_field.metadata["minimum"], meta_field.metadata["maximum"]
