"""Per-conversation settings: model, system prompt, sampling and moderation model, saved as they change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.validation import Integer, Number
from textual.widgets import Input, Label, Select, TextArea

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


class SettingsPanel(VerticalScroll):
    @dataclass
    class Changed(Message):
        panel: SettingsPanel
        changes: dict[str, Any]  # model, system_prompt, moderation_model, or params (the whole parameter dict)

    def __init__(
        self,
        model: str,
        models: list[str],
        system_prompt: str,
        params: SamplingParams,
        moderation_model: str = "",
        moderators: list[str] | None = None,
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

    def compose(self) -> ComposeResult:
        yield Label("Model", classes="field-label")
        yield Select([(name, name) for name in self._models], value=self._model, allow_blank=False, id="model")
        yield Label("Moderation model", classes="field-label")
        yield Select(
            [("off", ""), *((name, name) for name in self._moderators)],
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
        if event.validation_result is not None and not event.validation_result.is_valid:
            return
        name = event.input.id.removeprefix("param-")
        current = getattr(self._params, name)
        value = type(current)(float(event.value)) if isinstance(current, float) else int(event.value)
        if value != current:
            params = self._params.to_dict()
            params[name] = value
            self._params = SamplingParams.from_dict(params, self._params)
            self.post_message(self.Changed(self, {"params": self._params.to_dict()}))
