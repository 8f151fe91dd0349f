"""register: move the built GGUF (and adapter or vision file) into the library and write the lockfile beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.files import write_atomically
from tui.store import JobKind
from tui.zoo.catalog import Recipe
from tui.zoo.jobs.hashing import sha256
from tui.zoo.jobs.provenance import now, tool_versions
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.adapter import built_adapter
from tui.zoo.jobs.steps.download import Downloaded
from tui.zoo.jobs.steps.quantize import built_gguf
from tui.zoo.jobs.steps.read import CheckpointRead
from tui.zoo.jobs.steps.smoke_test import SmokeTested
from tui.zoo.jobs.steps.vision import built_vision
from tui.zoo.library import LORA_ADAPTER_SUFFIX, VISION_SUFFIX, Lockfile, lockfile_path


@dataclass(frozen=True)
class Registered(StepResult):
    step = StepName.REGISTER

    gguf: Path


def _sources_and_inputs(context: StepContext) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Where the inputs came from, and the sha256 of each, keyed ``<repo or directory>/<file>``."""
    if context.build.kind is JobKind.CHECKPOINT:
        read = context.result(CheckpointRead)
        return [{"path": str(read.directory)}], {f"{read.directory.name}/{n}": sha for n, sha in read.files.items()}
    snapshots = context.result(Downloaded).snapshots
    sources: list[dict[str, Any]] = [{"role": s.role, "repo": s.repo, "revision": s.revision} for s in snapshots]
    if context.build.user_base is not None:
        sources.append({"role": "base", "path": str(context.build.user_base)})
    return sources, {f"{s.repo}/{file}": sha for s in snapshots for file, sha in s.files.items()}


class Register(Step[Registered]):
    result_type = Registered

    def run(self, context: StepContext) -> Registered:
        build = context.build
        destination = build.destination(context.data_dir)
        moves = [(built_gguf(context), destination)]
        adapter, adapter_destination = built_adapter(context), None
        if adapter is not None:
            adapter_destination = destination.with_name(destination.stem + LORA_ADAPTER_SUFFIX)
            moves.append((adapter, adapter_destination))
        vision, vision_destination = built_vision(context), None
        if vision is not None:
            vision_destination = destination.with_name(destination.stem + VISION_SUFFIX)
            moves.append((vision, vision_destination))
        for built, target in moves:
            if built.exists():  # absent when a previous run moved it and was killed before recording this step
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(built, target)
        context.report(0, 0, f"sha256 of {destination.name}")
        sources, inputs = _sources_and_inputs(context)
        variant = build.variant
        lockfile = Lockfile(
            name=build.name,
            quant=build.quant,
            output_sha256=sha256(destination),
            catalog_id=variant.id if variant else None,
            recipe=(variant.recipe if variant else Recipe.NONE).value,
            sources=sources,
            inputs=inputs,
            tools=tool_versions(),
            prompt_format=build.prompt_format_name,
            stop=list(build.stop),
            smoke_test=context.result(SmokeTested).to_record(),
            created_at=now(),
            lora_adapter=adapter_destination.name if adapter_destination else None,
            lora_adapter_sha256=sha256(adapter_destination) if adapter_destination else None,
            vision_encoder=vision_destination.name if vision_destination else None,
            vision_encoder_sha256=sha256(vision_destination) if vision_destination else None,
        )
        write_atomically(lockfile_path(destination), lockfile.to_json())
        return Registered(destination)
