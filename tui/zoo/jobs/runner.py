"""``Jobs``: start, resume and run jobs for one data dir, recording each finished step in SQLite.

Running a job again (or asking for the same variant and quant) resumes at the first unfinished step:
intermediates live under ``<data_dir>/work/<job id>/``, and every step writes its output under a
temporary name first (the converters and ``huggingface_hub`` do), so a step cut short leaves only
leftovers, which the step removes before it is redone. A finished step whose output has since
vanished is redone, with every step after it.

However a step fails, the job ends in a recorded state (failed or cancelled, with one line saying why)
and the caller gets a ``JobError``; only a killed process leaves a job ``running``.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from tui.store import Job, JobKind, JobState, Store, StoreError
from tui.zoo.catalog import Catalog, Recipe, Status, Variant, load_catalog, shown
from tui.zoo.jobs import library_files
from tui.zoo.jobs.build import (
    DEFAULT_QUANT,
    Build,
    LoraMode,
    build_label,
    checked_quant,
    format_or_error,
    lora_mode,
    model_suffix,
)
from tui.zoo.jobs.claims import claimed, running_jobs
from tui.zoo.jobs.errors import JobCancelled, JobError
from tui.zoo.jobs.plan import catalog_steps, checkpoint_steps
from tui.zoo.jobs.step import JobProgress, JobProgressCallback, StepContext, StepName
from tui.zoo.jobs.steps import STEPS, Registered
from tui.zoo.library import Lockfile, RegisteredModel, is_gguf, lockfile_path

UNEXPECTED = "{step}: unexpected {kind}: {error}; finished steps are kept (this is a bug in zootui: please report it)"


class Jobs:
    """Runs and resumes jobs for one data dir; ``store`` records their steps.

    ``hub_cache`` and ``hub_token`` go to ``tui.zoo.hub.download`` (defaults: huggingface_hub's
    cache and login).
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        catalog: Catalog | None = None,
        *,
        hub_cache: Path | None = None,
        hub_token: str | bool | None = None,
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.catalog = catalog or load_catalog()
        self.hub_cache = hub_cache
        self.hub_token = hub_token

    # --- starting jobs -------------------------------------------------------------------------

    def get_model(
        self,
        variant_id: str,
        quant: str = DEFAULT_QUANT,
        *,
        lora: str = LoraMode.MERGE,
        base: Path | None = None,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Build catalog variant ``variant_id`` as ``quant`` into the library, resuming an unfinished job.

        ``lora`` is what happens to a LoRA variant's adapter (``LoraMode``): "merge" bakes it into the
        weights; "runtime" registers the base as ``<name>.gguf`` (named ``<variant>-<quant>-runtime``)
        with the adapter beside it as ``<name>.lora.gguf``, which the engine loads with it.
        ``base`` is a local copy of the base model the recipe starts from (a checkpoint directory,
        or BELLE's key file); without it the catalog's ``base_hub_id`` is downloaded.
        """
        variant = self._variant(variant_id)
        quant = checked_quant(quant, variant.runtime)
        mode = lora_mode(lora)
        _check_lora_mode(variant, mode)
        if base is not None and not base.exists():
            raise JobError(f"base model not found: {base}; check the path")
        params: dict[str, str] = {"base": str(base.resolve())} if base is not None else {}
        if mode is LoraMode.RUNTIME:  # merged builds keep the params they always had, so their jobs still resume
            params["lora"] = mode
        with claimed(self.data_dir, JobKind.CATALOG, variant.id, quant):
            job = self.store.unfinished_job(JobKind.CATALOG, variant.id, quant)
            if job is None or job.params != params:  # another base is another build; the Hub cache keeps downloads
                suffix = model_suffix(variant)
                library_files.free_destination(self.data_dir, variant.id, build_label(quant, mode), suffix)
                steps = catalog_steps(variant, quant, mode)
                job = self.store.create_job(JobKind.CATALOG, variant.id, quant, steps, params)
            return self._execute(job, progress, cancel)

    def import_checkpoint(
        self,
        directory: Path,
        quant: str = DEFAULT_QUANT,
        *,
        name: str | None = None,
        prompt_format_name: str | None = None,
        default_name: str | None = None,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Convert a local Hugging Face checkpoint directory into the library (no download, no recovery).

        ``prompt_format_name`` (a key of ``tui.zoo.templates.FORMATS``) replaces the checkpoint's own
        chat template. The model is registered as ``name`` when one is given, else as
        ``<default_name or the directory's name>-<quant>``; an unfinished import of the directory as
        ``quant`` resumes (under its own name, unless another is given).
        """
        quant = checked_quant(quant)
        if name is not None:
            library_files.checked_model_name(name)
        directory = directory.expanduser().resolve()
        if not directory.is_dir():
            raise JobError(f"not a directory: {directory}; give a Hugging Face checkpoint directory")
        if prompt_format_name is not None:
            format_or_error(prompt_format_name)
        target = str(directory)
        with claimed(self.data_dir, JobKind.CHECKPOINT, target, quant):
            job = self.store.unfinished_job(JobKind.CHECKPOINT, target, quant)
            if job is None or (name is not None and job.params.get("name") != name):
                model_id = name or library_files.checked_model_name(default_name or directory.name)
                params = {"name": model_id, "prompt_format": prompt_format_name, "name_as_given": name is not None}
                library_files.free_destination(self.data_dir, model_id, None if name is not None else quant)
                job = self.store.create_job(JobKind.CHECKPOINT, target, quant, checkpoint_steps(quant), params)
            return self._execute(job, progress, cancel)

    def import_hub_repo(
        self,
        repo_id: str,
        quant: str = DEFAULT_QUANT,
        *,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Download any Hub checkpoint (one outside the catalog) and import it as ``import_checkpoint`` does.

        The download goes to the Hub cache, which keeps finished files, so an interrupted import
        downloads only what is missing when it runs again.
        """
        from tui.zoo.hub import DownloadProgress, HubError, download

        def on_download(report: DownloadProgress) -> None:
            if cancel is not None and cancel.is_set():
                raise JobCancelled()
            if progress is not None:
                detail = f"{repo_id}: {report.detail}"
                progress(JobProgress(0, StepName.DOWNLOAD, 1, 1, report.done, report.total, detail))

        try:
            snapshot = download(repo_id, cache_dir=self.hub_cache, token=self.hub_token, on_progress=on_download)
        except HubError as error:
            raise JobError(str(error)) from error
        return self.import_checkpoint(
            snapshot.directory, quant, default_name=repo_id.split("/")[-1], progress=progress, cancel=cancel
        )

    def resume(
        self, job_id: int, progress: JobProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> RegisteredModel:
        """Run an unfinished job (``Store.jobs(unfinished_only=True)`` lists them) from where it stopped."""
        job = self.store.job(job_id)
        with claimed(self.data_dir, job.kind, job.target, job.quant):
            return self._execute(self.store.job(job_id), progress, cancel)

    def running(self) -> list[Job]:
        """The jobs running now, in this process or another (see ``claims.running_jobs``)."""
        return running_jobs(self.store, self.data_dir)

    def import_path(
        self,
        path: Path,
        quant: str = DEFAULT_QUANT,
        *,
        name: str | None = None,
        prompt_format_name: str | None = None,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Import what the user pointed at: a checkpoint directory is converted, a GGUF file is copied."""
        path = path.expanduser()
        if path.is_dir():
            return self.import_checkpoint(
                path, quant, name=name, prompt_format_name=prompt_format_name, progress=progress, cancel=cancel
            )
        if not path.exists():
            raise JobError(f"{path} does not exist; give a .gguf file or a Hugging Face checkpoint directory")
        if not is_gguf(path):
            raise JobError(f"{path} is neither a GGUF file nor a checkpoint directory")
        if prompt_format_name is not None:
            raise JobError("a prompt format goes with a checkpoint directory; a GGUF keeps its own chat template")
        return self.import_gguf(path, name=name)

    def import_gguf(self, path: Path, *, name: str | None = None) -> RegisteredModel:
        """Copy a GGUF file into the library, with a lockfile holding its sha256."""
        return library_files.import_gguf(self.data_dir, path, name=name)

    def delete_model(self, name: str) -> None:
        """Remove a model zootui put in the library (its GGUF and lockfile)."""
        library_files.delete_model(self.data_dir, name)

    # --- running -------------------------------------------------------------------------------

    def _variant(self, variant_id: str) -> Variant:
        try:
            _, variant = self.catalog.variant(variant_id)
        except KeyError:
            raise JobError(f"no catalog variant {variant_id!r}; `zootui models --all` lists them") from None
        if variant.status is Status.LOCAL_ONLY:
            raise JobError(
                f"{variant.id}: {shown(variant.reason or '')}; import your checkpoint with `zootui pull --import DIR`"
            )
        if variant.status is Status.UNSUPPORTED:
            raise JobError(f"{variant.id} is not supported yet: {shown(variant.reason or '')}")
        missing = variant.runtime.missing()
        if missing:
            raise JobError(f"{variant.id}: {missing}")
        return variant

    def _execute(
        self, job: Job, progress: JobProgressCallback | None, cancel: threading.Event | None
    ) -> RegisteredModel:
        self.store.update_job(job.id, JobState.RUNNING)
        context: StepContext | None = None
        try:
            context = StepContext(
                job,
                Build.of(job, self.catalog),
                self.data_dir,
                self.hub_cache,
                self.hub_token,
                progress,
                cancel or threading.Event(),
            )
            self._run_steps(context)
        except JobCancelled as error:
            self._record_end(job, JobState.CANCELLED, str(error))
            raise
        except JobError as error:
            self._record_end(job, JobState.FAILED, str(error))
            raise
        except StoreError as error:  # the database could not record a step (a full disk): one line already
            self._record_end(job, JobState.FAILED, str(error))
            raise JobError(str(error)) from error
        except OSError as error:  # a full disk or a file that went away mid-step
            message = f"{_step_title(context)}: {error.strerror or error}" + (
                f": {error.filename}" if error.filename else ""
            )
            self._record_end(job, JobState.FAILED, message)
            raise JobError(message) from error
        except Exception as error:  # a bug: the job still ends failed, with one line, never stuck "running"
            message = UNEXPECTED.format(
                step=_step_title(context), kind=type(error).__name__, error=" ".join(str(error).split())
            )
            self._record_end(job, JobState.FAILED, message)
            raise JobError(message) from error
        except BaseException:  # Ctrl-C, or the interpreter shutting down: resumable like a cancel
            self._record_end(job, JobState.CANCELLED, "interrupted; run it again to resume where it stopped")
            raise
        self.store.update_job(job.id, JobState.DONE)
        shutil.rmtree(context.work_dir, ignore_errors=True)  # intermediates; the Hub cache stays
        path = context.result(Registered).gguf
        return RegisteredModel(path.stem, path, Lockfile.from_json(lockfile_path(path).read_text("utf-8")))

    def _record_end(self, job: Job, state: JobState, message: str) -> None:
        """Record how the job ended, if the database can take it: with a full disk it cannot, and the row
        stays 'running', which no process mistakes for a running job once this one lets go of its claim."""
        try:
            self.store.update_job(job.id, state, message)
        except StoreError:
            pass

    def _run_steps(self, context: StepContext) -> None:
        job_id = context.job.id
        for position in range(len(context.job.steps)):
            context.position = position
            record = context.job.steps[position]
            step = _known_step(record.name)
            if record.finished and STEPS[step].still_there(record.result):
                continue
            if record.finished:  # its output vanished (a cleared cache): redo it and everything after
                self.store.reopen_steps_from(job_id, position)
                context.job = self.store.job(job_id)
            context.report(0, 0, "")
            result = STEPS[step].run(context).to_record()
            self.store.finish_step(job_id, position, result)
            context.job.steps[position].result = result


def _known_step(name: str) -> StepName:
    try:
        return StepName(name)
    except ValueError:
        raise JobError(f"this job has a step {name!r} that this zootui does not know; upgrade zootui") from None


def _step_title(context: StepContext | None) -> str:
    return context.step.title if context is not None else "starting"


def _check_lora_mode(variant: Variant, lora: LoraMode) -> None:
    if lora is LoraMode.RUNTIME and variant.recipe is not Recipe.LORA_MERGE:
        raise JobError(
            f"{variant.id} is not released as a LoRA adapter (recipe {variant.recipe.value!r}), "
            "so there is no adapter to apply at run time; get it without --lora runtime"
        )
