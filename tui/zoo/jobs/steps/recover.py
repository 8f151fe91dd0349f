"""recover: rebuild usable weights from what was published (delta, XOR, LoRA …) with the variant's recipe.

A recipe is one entry of ``RECIPES``: a call of ``converters.recover`` on ``RecoveryInputs``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.zoo.catalog import Recipe, Variant
from tui.zoo.jobs.errors import JobError, from_conversion_error
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.download import Downloaded, RepoRole


@dataclass(frozen=True)
class Recovered(StepResult):
    step = StepName.RECOVER

    checkpoint: Path
    """The rebuilt Hugging Face checkpoint directory."""


@dataclass(frozen=True)
class RecoveryInputs:
    """What a recovery recipe starts from and where it writes."""

    variant: Variant
    base: Path
    """The base model: the user's copy (``--base``) or the downloaded one (a checkpoint directory, or BELLE's key file)."""
    published: Path
    """The variant's downloaded snapshot directory: a delta, XOR payload or LoRA adapter."""
    published_files: tuple[Path, ...]
    """The files of the variant's own release that were downloaded (those its ``files`` patterns pick)."""
    adapters: tuple[Path, ...]
    """LoRA adapters to merge into the base, in order."""
    out: Path
    progress: Callable[[Any], None]
    cancel: threading.Event

    @property
    def common(self) -> dict[str, Any]:
        return {"progress": self.progress, "cancel": self.cancel}

    def published_file(self) -> Path:
        """The single file a one-file release is (Koala's EasyLM diff; its repo holds one per variant)."""
        if len(self.published_files) != 1:
            raise JobError(
                f"{self.variant.id}: expected one published file, got {len(self.published_files)}; "
                "its catalog entry's files must pick exactly one"
            )
        return self.published_files[0]


# The recipes the recover step implements, each called with ``converters.recover`` (imported when a
# job runs, not with this module) and its inputs. The catalog test checks every supported variant
# names one of these.
RECIPES: dict[Recipe, Callable[[Any, RecoveryInputs], Path]] = {
    Recipe.ADD_DELTA: lambda recover, r: recover.apply_delta(r.base, r.published, r.out, **r.common),
    Recipe.ADD_DELTA_ZERO_PAD: lambda recover, r: recover.apply_delta(
        r.base, r.published, r.out, pad_rows="zero", **r.common
    ),
    Recipe.ADD_DELTA_MEAN_PAD: lambda recover, r: recover.apply_delta(
        r.base, r.published, r.out, pad_rows="mean", dtype="float32", expected_sum=r.variant.weight_sum, **r.common
    ),
    Recipe.XOR_FILES: lambda recover, r: recover.xor_files(r.published, r.base, r.out, **r.common),
    Recipe.XOR_KEYSTREAM: lambda recover, r: recover.decrypt_keystream(r.published, r.base, r.out, **r.common),
    Recipe.LORA_MERGE: lambda recover, r: recover.merge_lora(r.base, r.adapters, r.out, **r.common),
    Recipe.EASYLM_DIFF: lambda recover, r: recover.apply_easylm_diff(r.base, r.published_file(), r.out, **r.common),
}


def base_model(context: StepContext) -> Path:
    """The base model a recipe starts from: the user's copy, or the downloaded one."""
    if context.build.user_base is not None:
        return context.build.user_base
    return context.result(Downloaded).of(RepoRole.BASE)[0].directory


class Recover(Step[Recovered]):
    result_type = Recovered

    def run(self, context: StepContext) -> Recovered:
        from converters import ConversionError, recover

        variant = context.variant
        recipe = RECIPES.get(variant.recipe)
        if recipe is None:
            raise JobError(f"{variant.id}: recipe {variant.recipe.value!r} is not implemented")
        downloaded = context.result(Downloaded)
        published = downloaded.model.directory
        chain = [s.directory for s in downloaded.of(RepoRole.ADAPTER)]
        # A build that keeps the variant's adapter for run time merges only the merge_first chain.
        adapters = (*chain, *([] if context.build.keeps_adapter else [published]))
        out = context.fresh_output(context.work_dir / "recovered")
        files = tuple(published / name for name in sorted(downloaded.model.files))
        inputs = RecoveryInputs(
            variant, base_model(context), published, files, adapters, out, context.converter_progress, context.cancel
        )
        try:
            recipe(recover, inputs)
        except ConversionError as error:
            raise from_conversion_error(error) from error
        return Recovered(out)
