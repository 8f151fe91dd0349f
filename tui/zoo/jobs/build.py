"""What a job builds: the typed description every step starts from, read from the job's row and the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.compat import StrEnum
from tui.store import Job, JobKind
from tui.zoo.catalog import Catalog, Runtime, Variant
from tui.zoo.jobs.errors import JobError
from tui.zoo.library import CHATGLM_CPP_SUFFIX, GGUF_SUFFIX, registered_name, registered_path
from tui.zoo.templates import PromptFormat, prompt_format

DEFAULT_QUANT = "q4_k_m"
CHATGLM_CPP_DEFAULT_QUANT = "q4_0"
"""chatglm.cpp has no k-quants; its smallest type is the default where llama.cpp's would be q4_k_m."""
RUNTIME_LORA_LABEL = "-runtime"
"""Added to the library name of a build that keeps its LoRA adapter separate, so the merged build of
the same quant can stay beside it."""


class LoraMode(StrEnum):
    """What happens to a LoRA variant's adapter."""

    MERGE = "merge"
    """Baked into the weights."""
    RUNTIME = "runtime"
    """Kept as a GGUF LoRA beside the base, applied by llama.cpp at load time."""


def lora_mode(value: str) -> LoraMode:
    try:
        return LoraMode(value)
    except ValueError:
        raise JobError(f"unknown LoRA mode {value!r}; choose {' or '.join(LoraMode)}") from None


def checked_quant(quant: str, runtime: Runtime = Runtime.LLAMA_CPP) -> str:
    """``quant`` as a type the runtime's converter writes; the runtime's default for the default quant."""
    from converters import CHATGLM_CPP_OUTTYPES, OUTTYPES

    types = CHATGLM_CPP_OUTTYPES if runtime is Runtime.CHATGLM_CPP else OUTTYPES
    name = quant.lower()
    if runtime is Runtime.CHATGLM_CPP and name == DEFAULT_QUANT:  # the default for llama.cpp means chatglm.cpp's
        name = CHATGLM_CPP_DEFAULT_QUANT
    if name not in types:
        raise JobError(f"unknown quant type {quant!r} for {runtime.value}; choose one of {', '.join(types)}")
    return name


def default_quant(variant: Variant) -> str:
    """The type ``zootui pull`` builds a variant in when none is asked for."""
    return CHATGLM_CPP_DEFAULT_QUANT if variant.runtime is Runtime.CHATGLM_CPP else DEFAULT_QUANT


def model_suffix(variant: Variant | None) -> str:
    """The library file's suffix: a GGUF, or chatglm.cpp's own file."""
    return CHATGLM_CPP_SUFFIX if variant is not None and variant.runtime is Runtime.CHATGLM_CPP else GGUF_SUFFIX


def format_or_error(name: str) -> PromptFormat:
    try:
        return prompt_format(name)
    except ValueError as error:
        raise JobError(str(error)) from None


def build_label(quant: str, lora: LoraMode) -> str:
    """What a build's library name adds to its model id (see ``registered_name``)."""
    return quant + RUNTIME_LORA_LABEL if lora is LoraMode.RUNTIME else quant


@dataclass(frozen=True)
class Build:
    """One job's target: what is built, from what, and under which library name."""

    kind: JobKind
    quant: str
    model_id: str
    """The catalog variant id, or the name an imported checkpoint is registered under."""
    variant: Variant | None
    """The catalog variant (catalog jobs only)."""
    lora: LoraMode
    user_base: Path | None
    """The user's own copy of the base model the recipe starts from (instead of downloading it)."""
    checkpoint: Path | None
    """The local checkpoint directory (checkpoint jobs only)."""
    prompt_format_name: str | None
    """The prompt format whose template, EOS and stop strings go into the GGUF."""
    name_as_given: bool = False
    """The user named the import: the library name is exactly that (the lockfile keeps the quant)."""

    @classmethod
    def of(cls, job: Job, catalog: Catalog) -> Build:
        if job.kind is JobKind.CATALOG:
            try:
                _, variant = catalog.variant(job.target)
            except KeyError:
                raise JobError(f"job {job.id} builds {job.target!r}, which the catalog no longer has") from None
            base = job.params.get("base")
            return cls(
                JobKind.CATALOG,
                job.quant,
                variant.id,
                variant,
                LoraMode(job.params.get("lora", LoraMode.MERGE)),
                Path(base) if base is not None else None,
                None,
                variant.prompt_format,
            )
        return cls(
            JobKind.CHECKPOINT,
            job.quant,
            job.params["name"],
            None,
            LoraMode.MERGE,
            None,
            Path(job.target),
            job.params.get("prompt_format"),
            bool(job.params.get("name_as_given")),
        )

    @property
    def label(self) -> str | None:
        """What the library name adds to ``model_id``: the build's type, unless the user chose the name."""
        return None if self.name_as_given else build_label(self.quant, self.lora)

    @property
    def name(self) -> str:
        """The library name the build is registered under."""
        return registered_name(self.model_id, self.label)

    def destination(self, data_dir: Path) -> Path:
        return registered_path(data_dir, self.model_id, self.label, model_suffix(self.variant))

    @property
    def runtime(self) -> Runtime:
        return self.variant.runtime if self.variant is not None else Runtime.LLAMA_CPP

    @property
    def keeps_adapter(self) -> bool:
        return self.lora is LoraMode.RUNTIME

    @property
    def prompt_format(self) -> PromptFormat | None:
        return format_or_error(self.prompt_format_name) if self.prompt_format_name else None

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings: the prompt format's, then the variant's own."""
        own = self.variant.stop if self.variant is not None else ()
        chosen = self.prompt_format
        return tuple(dict.fromkeys((*(chosen.stop if chosen else ()), *own)))
