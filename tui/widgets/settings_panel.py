"""Per-conversation settings: model, system prompt, sampling and moderation model, saved as they change.

A value is saved only while it is valid. An invalid one turns its field red, is never saved, and the
panel says why; closing the panel then asks for a fix (or, on a second try, puts the saved value back),
so the panel never shows a value the conversation does not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.validation import Integer, Number
from textual.widgets import Input, Label, Select, Static, TextArea

from tui.config import ChatSettings, EngineSettings, setting_bounds
from tui.engine import SamplingParams

# (parameter, label, the settings class that documents its range)
PARAMETER_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("temperature", "Temperature", ChatSettings),
    ("top_p", "Top-p", ChatSettings),
    ("top_k", "Top-k", ChatSettings),
    ("repeat_penalty", "Repeat penalty", ChatSettings),
    ("max_tokens", "Max tokens", ChatSettings),
    ("n_ctx", "Context length", EngineSettings),
    ("seed", "Seed (-1: random)", ChatSettings),
)
LABELS = {name: label for name, label, _ in PARAMETER_FIELDS}
SECTIONS = {name: section for name, _, section in PARAMETER_FIELDS}


class SettingsPanel(VerticalScroll):
    @dataclass
    class Changed(Message):
        panel: SettingsPanel
        changes: dict[str, Any]  # model, system_prompt, moderation_model, or params (the whole parameter dict)

    @dataclass
    class ValidityChanged(Message):
        panel: SettingsPanel
        reason: str | None  # why some text cannot be saved; None once every field is valid again

    def __init__(
        self,
        model: str,
        models: list[str],
        system_prompt: str,
        params: SamplingParams,
        moderation_model: str = "",
        moderators: list[str] | None = None,
        threads: str = "",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._model = model
        self._models = models if model in models else [model, *models]
        self._system_prompt = system_prompt
        self._params = params
        self._moderation_model = moderation_model
        moderators = moderators or []
        self._moderators = moderators if moderation_model in ("", *moderators) else [moderation_model, *moderators]
        self._threads = threads
        self._invalid: dict[str, str] = {}  # parameter -> why its text cannot be saved

    def compose(self) -> ComposeResult:
        yield Label("Model", classes="field-label")
        # Content prompts: a model's name or path is shown as written, never read as markup.
        yield Select([(Content(name), name) for name in self._models], value=self._model, allow_blank=False, id="model")
        yield Label("Moderation model", classes="field-label")
        yield Select(
            [("off", ""), *((Content(name), name) for name in self._moderators)],
            value=self._moderation_model,
            allow_blank=False,
            id="moderation-model",
            tooltip="Classifies each message you send first; a reply to one that needs intervention waits (ctrl+o)",
        )
        yield Label("System prompt", classes="field-label")
        yield TextArea(self._system_prompt, id="system-prompt", soft_wrap=True, tab_behavior="focus")
        for name, label, section in PARAMETER_FIELDS:
            low, high = setting_bounds(section, name)
            is_integer = isinstance(getattr(self._params, name), int)
            validator = (Integer if is_integer else Number)(minimum=low, maximum=high)
            yield Label(label, classes="field-label")
            yield Input(
                str(getattr(self._params, name)),
                id=f"param-{name}",
                type="integer" if is_integer else "number",
                validators=[validator],
                valid_empty=False,
                tooltip=f"from {low} to {high}",
            )
        yield Label("CPU threads", classes="field-label")
        yield Static(
            f"{self._threads}; [engine] n_threads and n_threads_batch in the config file change them.",
            id="threads",
            markup=False,
        )

    @property
    def invalid_reason(self) -> str | None:
        """Why the panel holds a value that is not saved, or None."""
        return "; ".join(self._invalid.values()) or None

    def first_invalid_field(self) -> Input | None:
        return next((self.query_one(f"#param-{name}", Input) for name in self._invalid), None)

    def revert_invalid(self) -> None:
        """Put the saved value back into every field whose text could not be saved."""
        for name in list(self._invalid):
            self.query_one(f"#param-{name}", Input).value = str(getattr(self._params, name))
        self._invalid.clear()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if not isinstance(event.value, str):
            return
        if event.select.id == "moderation-model":
            if event.value != self._moderation_model:
                self._moderation_model = event.value
                self.post_message(self.Changed(self, {"moderation_model": event.value}))
        elif event.value != self._model:
            self._model = event.value
            self.post_message(self.Changed(self, {"model": event.value}))

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        if event.text_area.text != self._system_prompt:
            self._system_prompt = event.text_area.text
            self.post_message(self.Changed(self, {"system_prompt": self._system_prompt}))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        name = event.input.id.removeprefix("param-")
        result = event.validation_result
        if result is not None and not result.is_valid:
            low, high = setting_bounds(SECTIONS[name], name)
            shown = repr(event.value) if event.value else "(empty)"
            self._invalid[name] = f"{LABELS[name]} {shown} is not a number from {low} to {high}"
            self.post_message(self.ValidityChanged(self, self.invalid_reason))
            return
        if self._invalid.pop(name, None) is not None:
            self.post_message(self.ValidityChanged(self, self.invalid_reason))
        current = getattr(self._params, name)
        value = type(current)(float(event.value)) if isinstance(current, float) else int(event.value)
        if value != current:
            params = self._params.to_dict()
            params[name] = value
            self._params = SamplingParams.from_dict(params, self._params)
            self.post_message(self.Changed(self, {"params": self._params.to_dict()}))
