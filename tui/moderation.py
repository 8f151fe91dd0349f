"""Moderation models, used as their authors use them: OpenChatKit's GPT-JT-Moderation-6B.

A moderation model is a library model whose prompt format (given by the catalog, recorded in its
lockfile) is one of SCHEMES. Its chat template turns the message to classify into the classifier's
own prompt, so the engine runs it like any chat; its answer is one of the scheme's labels.

OpenChatKit trained GPT-JT-Moderation-6B on text that starts with the list of its labels,
training/tasks/data_loaders/prosocial.py (OpenChatKit v0.15):

    text_context = '''Possible labels:
    1. casual
    2. needs caution
    3. needs intervention
    4. possibly needs caution
    5. probably needs caution'''

followed by "Input: {text}\\nOutput: {label}" examples (the model card's prompt). The model card says
how it is used: "In chat applications the moderation model runs in tandem with the main chat bot
[...]. If needed, the moderation model intervenes overriding the main chat bot's response", and its
one example of an answer that is acted on is "needs intervention": that label holds the reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tui.engine import SamplingParams


@dataclass(frozen=True)
class Scheme:
    """A moderation model's labels and which of them hold the reply."""

    labels: tuple[str, ...]
    intervention: frozenset[str]

    def label_of(self, answer: str) -> str | None:
        """The label the model answered, or None when its answer is none of them.

        The answer is the first line of what it generated (the prompt format stops at a newline);
        case and surrounding spaces do not count.
        """
        lines = answer.strip().splitlines()
        first = lines[0].strip().lower() if lines else ""
        return next((label for label in self.labels if label == first), None)


OPENCHATKIT = Scheme(
    labels=("casual", "needs caution", "needs intervention", "possibly needs caution", "probably needs caution"),
    intervention=frozenset({"needs intervention"}),
)
SCHEMES: dict[str, Scheme] = {"openchatkit_moderation": OPENCHATKIT}
"""Prompt format -> the scheme of the moderation models that use it."""

# A label is a few tokens; greedy, so the same message always gets the same label.
CLASSIFY_PARAMS = SamplingParams(temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.0, max_tokens=12, seed=0)


@dataclass(frozen=True)
class Moderation:
    """What the moderation model said about one user message (saved with the message)."""

    model: str
    label: str | None
    """One of the scheme's labels; None when the answer was none of them (the reply is not held)."""
    answer: str
    held: bool
    """The reply waits until the user sends it anyway."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> Moderation | None:
        if not saved:
            return None
        try:
            return cls(str(saved["model"]), saved["label"], str(saved["answer"]), bool(saved["held"]))
        except (KeyError, TypeError):
            return None

    def summary(self) -> str:
        label = self.label or f"unrecognised answer {self.answer.strip()[:40]!r}"
        return f"moderation: {label}" + (" · reply held" if self.held else "")


def scheme_for(prompt_format: str | None) -> Scheme | None:
    return SCHEMES.get(prompt_format or "")


def moderators(models: Iterable) -> list[str]:
    """Names of the library models (``tui.zoo.library.LibraryModel``) that are moderation models."""
    return [m.name for m in models if m.lockfile is not None and scheme_for(m.lockfile.prompt_format) is not None]
