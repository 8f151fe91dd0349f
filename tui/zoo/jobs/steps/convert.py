"""convert: the checkpoint to GGUF with the prompt format's template, EOS and stop strings, as the job's
type when the converter writes it directly, else as the f16 the quantize step starts from. A chatglm.cpp
variant (ChatGLM-6B v1) becomes chatglm.cpp's model file, in the job's type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.store import JobKind
from tui.zoo.catalog import Recipe, Runtime
from tui.zoo.jobs.errors import from_conversion_error
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.download import Downloaded, RepoRole
from tui.zoo.jobs.steps.read import CheckpointRead
from tui.zoo.jobs.steps.recover import Recovered, base_model

INTERMEDIATE_TYPE = "f16"


@dataclass(frozen=True)
class Converted(StepResult):
    step = StepName.CONVERT

    gguf: Path


@dataclass(frozen=True)
class _Source:
    directory: Path
    provenance: dict[str, str]
    """Repo and revision it came from (empty: convert infers them from a Hub cache path)."""
    sha256: dict[str, str]
    """Digests an earlier step computed for its files, so that convert does not read them again."""


def _source(context: StepContext) -> _Source:
    """The checkpoint to convert."""
    if context.build.kind is JobKind.CHECKPOINT:
        read = context.result(CheckpointRead)
        return _Source(read.directory, {}, read.files)
    downloaded = context.result(Downloaded)
    model = downloaded.model
    provenance = {"repo": model.repo, "revision": model.revision}
    if context.has(StepName.RECOVER):
        return _Source(context.result(Recovered).checkpoint, provenance, {})
    if context.variant.recipe is Recipe.NONE:
        return _Source(model.directory, provenance, model.files)
    # A LoRA kept for run time with no chain to merge first: the GGUF is the base itself.
    base = base_model(context)
    known = next((s.files for s in downloaded.of(RepoRole.BASE) if s.directory == base), {})
    return _Source(base, {}, known)


class Convert(Step[Converted]):
    result_type = Converted

    def run(self, context: StepContext) -> Converted:
        # ``import converters``: ``converters.convert`` is the function it exports (and a module of the same name).
        import converters

        build = context.build
        source = _source(context)
        if build.runtime is Runtime.CHATGLM_CPP:
            out = context.fresh_output(context.work_dir / build.destination(context.data_dir).name)
            try:
                converters.convert_chatglm(
                    source.directory, out, build.quant, progress=context.converter_progress, cancel=context.cancel
                )
            except converters.ConversionError as error:
                raise from_conversion_error(error) from error
            return Converted(out)
        writes_target = build.quant in converters.DIRECT_OUTTYPES
        file_name = f"{build.name}.gguf" if writes_target else f"model-{INTERMEDIATE_TYPE}.gguf"
        out = context.fresh_output(context.work_dir / file_name)
        chosen = build.prompt_format
        try:
            converters.convert(
                source.directory,
                out,
                outtype=build.quant if writes_target else INTERMEDIATE_TYPE,
                chat_template=chosen.template if chosen else None,
                eos_token=chosen.eos if chosen else None,
                stop_strings=build.stop,
                prompt_format=chosen.family if chosen else None,
                provenance=source.provenance,
                # Keyed by file name: the checkpoint's own files, not those in its subdirectories.
                known_sha256={name: digest for name, digest in source.sha256.items() if "/" not in name},
                progress=context.converter_progress,
                cancel=context.cancel,
            )
        except converters.ConversionError as error:
            raise from_conversion_error(error) from error
        return Converted(out)
