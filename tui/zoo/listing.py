"""The catalog and the local library as one list of rows, for the model browser.

Each catalog variant is a row whose status says what this machine has of it; library models that
no catalog entry produced (the default model, imported GGUFs) are rows of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.store import Job, JobKind, Store
from tui.zoo.catalog import Catalog, Status, System, Variant, shown
from tui.zoo.jobs import StepName
from tui.zoo.jobs.claims import running_jobs
from tui.zoo.library import LibraryModel, library_models

LIBRARY_FAMILY = "library"


@dataclass(frozen=True)
class ModelRow:
    key: str
    """The catalog variant id, or the library name of a model outside the catalog."""
    family: str
    variant: str
    arch: str
    parameters_b: float | None
    size_gb: float | None
    """Download size for a catalog variant, file size for a library model."""
    license: str
    release_form: str
    status: str
    """available, downloaded, converted (with which quants), getting (a job running, here or in another
    zootui), unsupported, local-only, or in library."""
    reason: str | None
    system: System | None
    catalog_variant: Variant | None
    library: tuple[LibraryModel, ...]
    """GGUFs on this machine for the row, one per quant."""

    def matches(self, text: str) -> bool:
        """Every word of text appears in the row's family, variant, arch, license, release form or status."""
        haystack = " ".join(
            (self.key, self.family, self.variant, self.arch, self.license, self.release_form, self.status)
        ).lower()
        return all(word in haystack for word in text.lower().split())


def _downloaded_variants(store: Store) -> set[str]:
    """Variants whose unfinished job has its download done (the job resumes from there)."""
    return {
        job.target
        for job in store.jobs(unfinished_only=True)
        if any(step.name == StepName.DOWNLOAD and step.finished for step in job.steps)
    }


def running_status(job: Job) -> str:
    """A job some process is running, as a status: "getting: convert (3/6)"."""
    position = next((i for i, step in enumerate(job.steps) if not step.finished), len(job.steps) - 1)
    return f"getting: {StepName(job.steps[position].name).title} ({position + 1}/{len(job.steps)})"


def running_by_target(store: Store, data_dir: Path) -> dict[str, Job]:
    """Catalog variant id -> the job a process (this one or another) is running for it."""
    return {job.target: job for job in running_jobs(store, data_dir) if job.kind is JobKind.CATALOG}


def _variant_status(
    variant: Variant, converted: tuple[LibraryModel, ...], downloaded: bool, running: Job | None
) -> str:
    if running is not None:
        return running_status(running)
    if converted:
        return "converted: " + ", ".join(model.quant for model in converted)
    if variant.status is Status.UNSUPPORTED:
        return "unsupported"
    if variant.status is Status.LOCAL_ONLY:
        return "local-only"
    if variant.runtime.missing():
        return f"needs zootui[{variant.runtime.extra}]"
    return "downloaded" if downloaded else "available"


def model_rows(catalog: Catalog, data_dir: Path, store: Store) -> list[ModelRow]:
    library = library_models(data_dir)
    by_variant: dict[str, list[LibraryModel]] = {}
    outside_catalog: list[LibraryModel] = []
    for model in library:
        if model.variant_id:
            by_variant.setdefault(model.variant_id, []).append(model)
        else:
            outside_catalog.append(model)
    downloaded = _downloaded_variants(store)
    running = running_by_target(store, data_dir)
    rows = [
        ModelRow(
            key=model.name,
            family=LIBRARY_FAMILY,
            variant=model.name,
            arch="GGUF",
            parameters_b=None,
            size_gb=model.size_bytes / 1e9,
            license="see the model's source",
            release_form="gguf",
            status="in library" + (f": {model.quant}" if model.quant else ""),
            reason=None,
            system=None,
            catalog_variant=None,
            library=(model,),
        )
        for model in outside_catalog
    ]
    for system, variant in catalog.variants():
        converted = tuple(by_variant.get(variant.id, ()))
        rows.append(
            ModelRow(
                key=variant.id,
                family=system.name,
                variant=variant.name,
                arch=variant.arch,
                parameters_b=variant.parameters_b,
                size_gb=variant.download_gb,
                license=variant.license,
                release_form=variant.release_form.value,
                status=_variant_status(variant, converted, variant.id in downloaded, running.get(variant.id)),
                reason=shown(variant.reason) if variant.reason else variant.runtime.missing(),
                system=system,
                catalog_variant=variant,
                library=converted,
            )
        )
    return rows
