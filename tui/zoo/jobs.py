"""Jobs: get a model from the catalog (or a local checkpoint) into the library, resumably.

A catalog job runs download → recover → convert → quantize → smoke_test → register; recover is left
out for full releases and quantize for types the converter writes directly (f32, f16, bf16, q8_0).
A LoRA variant got with ``lora="runtime"`` keeps its adapter out of the weights: the base (with any
``merge_first`` chain merged in by recover) is converted and quantized, an "adapter" step writes the
adapter as a GGUF LoRA, and both are registered side by side for llama.cpp to combine at load time.
Importing a checkpoint directory runs read → convert → quantize → smoke_test → register.

Each finished step stores its result in SQLite (``Store.finish_step``). Running a job again (or
asking for the same variant and quant) resumes at the first unfinished step: intermediates live
under ``<data_dir>/work/<job id>/``, and every step writes its output under a temporary name first
(the converters and ``huggingface_hub`` do), so a step cut short leaves only leftovers, which are
removed before the step is redone. A finished step whose output has since vanished is redone too.

The CLI and the TUI (from a thread worker) share this module: progress goes to one callback as
``JobProgress`` and cancellation comes through a ``threading.Event``. Failures a user can cause
end in ``JobError`` with one line; what earlier steps produced is kept for the next try.

``converters`` and ``llama_cpp`` are imported inside the steps that use them, so that importing
this module (the model browser does at start) stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from tui.files import write_atomically
from tui.store import Job, Store
from tui.zoo.catalog import Catalog, Recipe, Status, Variant, load_catalog
from tui.zoo.fit import quant_name
from tui.zoo.gguf_header import read_header
from tui.zoo.hub import DownloadProgress, HubError, download
from tui.zoo.library import (
    DEFAULT_MODEL_NAME,
    LORA_ADAPTER_SUFFIX,
    Lockfile,
    library_models,
    lockfile_path,
    models_dir,
    registered_name,
    registered_path,
)
from tui.zoo.templates import prompt_format

DEFAULT_QUANT = "q4_k_m"
SMOKE_PROMPT = "Hello"
SMOKE_TOKENS = 8
SMOKE_CONTEXT = 256
_HASH_BLOCK = 4 * 2**20

CATALOG_JOB = "catalog"
CHECKPOINT_JOB = "checkpoint"

LORA_MERGE = "merge"
LORA_RUNTIME = "runtime"
LORA_MODES = (LORA_MERGE, LORA_RUNTIME)
RUNTIME_LORA_LABEL = "-runtime"
"""Added to the library name of a build that keeps its LoRA adapter separate, so the merged build of
the same quant can stay beside it."""


class JobError(Exception):
    """A job stopped for a reason the user can act on; the message is one line. Finished steps are kept."""


class JobCancelled(JobError):
    """The cancel event was set; the job resumes where it stopped when run again."""

    def __init__(self, message: str = "cancelled; run it again to resume where it stopped") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class JobProgress:
    """One report from a running job."""

    job_id: int
    step: str
    index: int
    """1-based position of ``step`` among the job's ``total`` steps."""
    total: int
    bytes_done: int
    bytes_total: int
    detail: str
    """What is being worked on: a file, a tensor, or the step's result."""

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0


JobProgressCallback = Callable[[JobProgress], None]


@dataclass(frozen=True)
class RegisteredModel:
    """A model the library now holds: chat with it by ``name``."""

    name: str
    path: Path
    lockfile: Lockfile


def _sha256(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            on_bytes(len(block))
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the output, for the lockfile."""
    import converters
    from tui import __version__

    found = {"zootui": __version__, "converters": converters.__version__}
    for package in ("llama_cpp_python", "gguf", "huggingface_hub"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_with_leftovers(path: Path) -> None:
    """Remove a step's output and what a cut-short write of it left: the converters, the recovery
    recipes and the quantizer all write to ``.<name>.<something>`` beside the final name."""
    _remove(path)
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*"):
            _remove(leftover)


def _checkpoint_inputs(directory: Path) -> list[Path]:
    """The files a conversion of ``directory`` reads (also checks it is a checkpoint at all)."""
    from converters import ConversionError, open_checkpoint
    from converters.convert import input_files

    try:
        with open_checkpoint(directory) as checkpoint:
            return input_files(checkpoint)
    except ConversionError as error:
        raise JobError(str(error)) from error


class _Run:
    """One execution of a job: the step in progress, its reports, and the cancel switch."""

    def __init__(self, job: Job, progress: JobProgressCallback | None, cancel: threading.Event) -> None:
        self.job = job
        self.progress = progress
        self.cancel = cancel
        self.position = 0

    @property
    def step(self) -> str:
        return self.job.steps[self.position].name

    def report(self, done: int, total: int, detail: str = "") -> None:
        """Report progress; raises JobCancelled once cancel is set (steps without their own switch stop here)."""
        if self.cancel.is_set():
            raise JobCancelled()
        if self.progress is not None:
            self.progress(
                JobProgress(self.job.id, self.step, self.position + 1, len(self.job.steps), done, total, detail)
            )

    def converter_progress(self, report: Any) -> None:
        """Adapter for ``converters.Progress`` reports."""
        self.report(report.bytes_done, report.bytes_total, report.tensor)

    def result(self, name: str) -> dict[str, Any]:
        return next(step.result for step in self.job.steps if step.name == name and step.result is not None)


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
        lora: str = LORA_MERGE,
        base: Path | None = None,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Build catalog variant ``variant_id`` as ``quant`` into the library, resuming an unfinished job.

        ``lora`` is what happens to a LoRA variant's adapter: "merge" bakes it into the weights;
        "runtime" registers the base as ``<name>.gguf`` (named ``<variant>-<quant>-runtime``) with
        the adapter beside it as ``<name>.lora.gguf``, which the engine loads with it.
        ``base`` is a local copy of the base model the recipe starts from (a checkpoint directory,
        or BELLE's key file); without it the catalog's ``base_hub_id`` is downloaded.
        """
        quant = _checked_quant(quant)
        variant = self._variant(variant_id)
        _check_lora_mode(variant, lora)
        if base is not None and not base.exists():
            raise JobError(f"base model not found: {base}; check the path")
        params: dict[str, str] = {"base": str(base.resolve())} if base is not None else {}
        if lora == LORA_RUNTIME:  # merged builds keep the params they always had, so their jobs still resume
            params["lora"] = LORA_RUNTIME
        job = self.store.unfinished_job(CATALOG_JOB, variant.id, quant)
        if job is None or job.params != params:  # another base is another build; the Hub cache keeps downloads
            self._free_destination(variant.id, _build_label(quant, lora))
            job = self.store.create_job(CATALOG_JOB, variant.id, quant, catalog_steps(variant, quant, lora), params)
        return self._execute(job, progress, cancel)

    def import_checkpoint(
        self,
        directory: Path,
        quant: str = DEFAULT_QUANT,
        *,
        name: str | None = None,
        prompt_format_name: str | None = None,
        progress: JobProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RegisteredModel:
        """Convert a local Hugging Face checkpoint directory into the library (no download, no recovery).

        ``prompt_format_name`` (a key of ``tui.zoo.templates.FORMATS``) replaces the checkpoint's own
        chat template; the model is registered as ``<name or directory name>-<quant>``.
        """
        quant = _checked_quant(quant)
        directory = directory.expanduser().resolve()
        if not directory.is_dir():
            raise JobError(f"not a directory: {directory}; give a Hugging Face checkpoint directory")
        if prompt_format_name is not None:
            _format_or_error(prompt_format_name)
        target = str(directory)
        job = self.store.unfinished_job(CHECKPOINT_JOB, target, quant)
        if job is None:
            params = {"name": name or directory.name, "prompt_format": prompt_format_name}
            self._free_destination(params["name"], quant)
            job = self.store.create_job(CHECKPOINT_JOB, target, quant, ["read", *_build_steps(quant)], params)
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

        def on_download(report: DownloadProgress) -> None:
            if cancel is not None and cancel.is_set():
                raise JobCancelled()
            if progress is not None:
                progress(JobProgress(0, "download", 1, 1, report.done, report.total, f"{repo_id}: {report.filename}"))

        try:
            snapshot = download(repo_id, cache_dir=self.hub_cache, token=self.hub_token, on_progress=on_download)
        except HubError as error:
            raise JobError(str(error)) from error
        return self.import_checkpoint(
            snapshot.directory, quant, name=repo_id.split("/")[-1], progress=progress, cancel=cancel
        )

    def resume(
        self, job_id: int, progress: JobProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> RegisteredModel:
        """Run an unfinished job (``Store.jobs(unfinished_only=True)`` lists them) from where it stopped."""
        return self._execute(self.store.job(job_id), progress, cancel)

    def import_gguf(self, path: Path, *, name: str | None = None) -> RegisteredModel:
        """Copy a GGUF file into the library, with a lockfile holding its sha256."""
        path = path.expanduser()
        if not path.is_file():
            raise JobError(f"GGUF file not found: {path}; check the path")
        try:
            file_type = read_header(path).metadata.get("general.file_type")
        except (ValueError, OSError) as error:
            raise JobError(f"{path} is not a readable GGUF file ({error})") from error
        quant = quant_name(int(file_type)) if file_type is not None else "unknown"
        name = name or path.stem
        destination = self._free_destination(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            digest = hashlib.sha256()  # of the bytes as they are copied: one read of a file of many GB
            with path.open("rb") as source, partial.open("wb") as copy:
                while block := source.read(_HASH_BLOCK):
                    digest.update(block)
                    copy.write(block)
            lockfile = Lockfile(
                name=name,
                quant=quant,
                output_sha256=digest.hexdigest(),
                sources=[{"path": str(path.resolve())}],
                inputs={path.name: digest.hexdigest()},
                tools=tool_versions(),
                created_at=_now(),
            )
            write_atomically(lockfile_path(destination), lockfile.to_json())
            os.replace(partial, destination)
        except OSError as error:
            raise JobError(f"cannot copy {path} into the library: {error.strerror or error}") from error
        finally:
            partial.unlink(missing_ok=True)
        return RegisteredModel(name, destination, lockfile)

    def delete_model(self, name: str) -> None:
        """Remove a model zootui put in the library (its GGUF and lockfile)."""
        if name == DEFAULT_MODEL_NAME:
            raise JobError("the default model ships with zootui and cannot be deleted")
        library = models_dir(self.data_dir)
        model = next(
            (
                m
                for m in library_models(self.data_dir)
                if m.name == name and m.path is not None and m.path.is_relative_to(library)
            ),
            None,
        )
        if model is None or model.path is None:
            raise JobError(f"no model named {name!r} in the library; `zootui models` lists them")
        if model.lockfile is not None and model.lockfile.lora_adapter:
            (model.path.parent / model.lockfile.lora_adapter).unlink(missing_ok=True)
        lockfile_path(model.path).unlink(missing_ok=True)
        model.path.unlink(missing_ok=True)
        if model.path.parent != library and not any(model.path.parent.iterdir()):
            model.path.parent.rmdir()

    # --- running -------------------------------------------------------------------------------

    def _variant(self, variant_id: str) -> Variant:
        try:
            _, variant = self.catalog.variant(variant_id)
        except KeyError:
            raise JobError(f"no catalog variant {variant_id!r}; `zootui models --all` lists them") from None
        if variant.status is Status.LOCAL_ONLY:
            raise JobError(f"{variant.id}: {variant.reason}; import your checkpoint with `zootui pull --import DIR`")
        if variant.status is Status.UNSUPPORTED:
            raise JobError(f"{variant.id} is not supported yet: {variant.reason}")
        return variant

    def _free_destination(self, model_id: str, quant: str | None = None) -> Path:
        destination = registered_path(self.data_dir, model_id, quant)
        if destination.exists():
            raise JobError(
                f"the library already has a model named {destination.stem!r}; delete it first or choose another name"
            )
        return destination

    def _execute(
        self, job: Job, progress: JobProgressCallback | None, cancel: threading.Event | None
    ) -> RegisteredModel:
        run = _Run(job, progress, cancel or threading.Event())
        self.store.update_job(job.id, "running")
        try:
            for run.position in range(len(job.steps)):
                step = run.job.steps[run.position]
                if step.finished and self._still_there(step.result):
                    continue
                if step.finished:  # its output vanished (a cleared cache): redo it and everything after
                    self.store.reopen_steps_from(job.id, run.position)
                    run.job = self.store.job(job.id)
                run.report(0, 0, "")
                result = getattr(self, f"_step_{step.name}")(run)
                self.store.finish_step(job.id, run.position, result)
                run.job.steps[run.position].result = result
        except JobCancelled as error:
            self.store.update_job(job.id, "cancelled", str(error))
            raise
        except JobError as error:
            self.store.update_job(job.id, "failed", str(error))
            raise
        except OSError as error:  # a full disk or a file that went away mid-step
            message = f"{run.step}: {error.strerror or error}" + (f": {error.filename}" if error.filename else "")
            self.store.update_job(job.id, "failed", message)
            raise JobError(message) from error
        self.store.update_job(job.id, "done")
        shutil.rmtree(self._work_dir(job), ignore_errors=True)  # intermediates; the Hub cache stays
        registered = run.result("register")
        path = Path(registered["gguf"])
        return RegisteredModel(path.stem, path, Lockfile.from_json(lockfile_path(path).read_text("utf-8")))

    @staticmethod
    def _still_there(result: dict[str, Any] | None) -> bool:
        """Every output path a finished step recorded still exists."""
        paths = [Path(p) for key, p in (result or {}).items() if key in ("directory", "checkpoint", "gguf", "adapter")]
        paths += [Path(s["directory"]) for s in (result or {}).get("snapshots", ())]
        return all(p.exists() for p in paths)

    def _work_dir(self, job: Job) -> Path:
        return self.data_dir / "work" / str(job.id)

    def _model_id(self, job: Job) -> str:
        return job.target if job.kind == CATALOG_JOB else job.params["name"]

    def _name(self, job: Job) -> str:
        return registered_name(self._model_id(job), _job_label(job))

    def _destination(self, job: Job) -> Path:
        return registered_path(self.data_dir, self._model_id(job), _job_label(job))

    def _base_dir(self, run: _Run) -> Path:
        """The base model a recipe starts from: the user's copy, or the downloaded one."""
        if "base" in run.job.params:
            return Path(run.job.params["base"])
        return next(Path(s["directory"]) for s in run.result("download")["snapshots"] if s["role"] == "base")

    def _variant_of(self, job: Job) -> Variant | None:
        return self.catalog.variant(job.target)[1] if job.kind == CATALOG_JOB else None

    # --- steps: each returns the result to record -------------------------------------------------

    def _step_download(self, run: _Run) -> dict[str, Any]:
        variant = self._variant_of(run.job)
        assert variant is not None and variant.hub_id is not None
        repos = [("model", variant.hub_id, variant.files)]
        repos += [("adapter", hub_id, ()) for hub_id in variant.merge_first]
        if variant.recipe is not Recipe.NONE and "base" not in run.job.params:
            if variant.base_hub_id is None:
                raise JobError(
                    f"{variant.id} is rebuilt from {variant.base}, which is not on the Hub; "
                    "give your copy with `zootui pull ID --base PATH`"
                )
            repos.append(("base", variant.base_hub_id, ()))
        snapshots = []
        for role, repo_id, patterns in repos:

            def on_download(p: DownloadProgress, repo_id: str = repo_id) -> None:
                run.report(p.done, p.total, f"{repo_id}: {p.filename}")

            try:
                snapshot = download(
                    repo_id, patterns=patterns, cache_dir=self.hub_cache, token=self.hub_token, on_progress=on_download
                )
            except HubError as error:
                raise JobError(str(error)) from error
            files = [snapshot.directory / name for name in snapshot.files]
            snapshots.append(
                {
                    "role": role,
                    "repo": repo_id,
                    "revision": snapshot.commit,
                    "directory": str(snapshot.directory),
                    "files": self._hash_files(run, files, snapshot.directory, repo_id),
                }
            )
        return {"snapshots": snapshots}

    def _step_read(self, run: _Run) -> dict[str, Any]:
        directory = Path(run.job.target)
        files = _checkpoint_inputs(directory)
        return {"directory": str(directory), "files": self._hash_files(run, files, directory, directory.name)}

    def _hash_files(self, run: _Run, files: list[Path], root: Path, label: str) -> dict[str, str]:
        total = sum(f.stat().st_size for f in files)
        done = 0
        hashes: dict[str, str] = {}
        for file in files:

            def advance(n: int, file: Path = file) -> None:
                nonlocal done
                done += n
                run.report(done, total, f"sha256 {label}/{file.name}")

            hashes[file.relative_to(root).as_posix()] = _sha256(file, advance)
        return hashes

    def _step_recover(self, run: _Run) -> dict[str, Any]:
        from converters import ConversionError, recover

        variant = self._variant_of(run.job)
        assert variant is not None
        snapshots = {s["role"]: Path(s["directory"]) for s in run.result("download")["snapshots"]}
        adapters = [Path(s["directory"]) for s in run.result("download")["snapshots"] if s["role"] == "adapter"]
        base = self._base_dir(run)
        published = snapshots["model"]
        # A build that keeps the variant's adapter for run time merges only the merge_first chain.
        merged_adapters = [*adapters, *([] if _keeps_adapter(run.job) else [published])]
        out = self._work_dir(run.job) / "recovered"
        _remove_with_leftovers(out)
        recipe = RECIPES.get(variant.recipe)
        if recipe is None:
            raise JobError(f"{variant.id}: recipe {variant.recipe.value!r} is not implemented")
        inputs = RecoveryInputs(variant, base, published, merged_adapters, out, run.converter_progress, run.cancel)
        try:
            recipe(recover, inputs)
        except ConversionError as error:
            raise _job_error(error) from error
        return {"checkpoint": str(out)}

    def _step_convert(self, run: _Run) -> dict[str, Any]:
        from converters import ConversionError, convert
        from converters.convert import DIRECT_TYPES

        job = run.job
        writes_target = job.quant in DIRECT_TYPES
        out = self._work_dir(job) / (f"{self._name(job)}.gguf" if writes_target else "model-f16.gguf")
        _remove_with_leftovers(out)
        template, eos, stop, provenance = None, None, (), {}
        if job.kind == CATALOG_JOB:
            variant = self._variant_of(job)
            assert variant is not None
            snapshot = next(s for s in run.result("download")["snapshots"] if s["role"] == "model")
            provenance = {"repo": snapshot["repo"], "revision": snapshot["revision"]}
            if _has_step(job, "recover"):
                source = Path(run.result("recover")["checkpoint"])
            elif variant.recipe is Recipe.NONE:
                source = Path(snapshot["directory"])
            else:  # a LoRA kept for run time with no chain to merge first: the GGUF is the base itself
                # No provenance given: convert infers the base's repo and revision from its Hub cache path.
                source, provenance = self._base_dir(run), {}
            format_name = variant.prompt_format
            stop = variant.stop
        else:
            source = Path(run.result("read")["directory"])
            format_name = job.params.get("prompt_format")
        if format_name:
            chosen = _format_or_error(format_name)
            template, eos = chosen.template, chosen.eos
            stop = tuple(dict.fromkeys((*chosen.stop, *stop)))
        try:
            convert(
                source,
                out,
                outtype=job.quant if writes_target else "f16",
                chat_template=template,
                eos_token=eos,
                stop_strings=stop,
                provenance=provenance,
                progress=run.converter_progress,
                cancel=run.cancel,
            )
        except ConversionError as error:
            raise _job_error(error) from error
        return {"gguf": str(out)}

    def _step_quantize(self, run: _Run) -> dict[str, Any]:
        from converters import ConversionError, quantize

        out = self._work_dir(run.job) / f"{self._name(run.job)}.gguf"
        _remove_with_leftovers(out)
        try:
            quantize(
                run.result("convert")["gguf"], out, run.job.quant, progress=run.converter_progress, cancel=run.cancel
            )
        except ConversionError as error:
            raise _job_error(error) from error
        return {"gguf": str(out)}

    def _step_adapter(self, run: _Run) -> dict[str, Any]:
        """Write the variant's own LoRA adapter as a GGUF LoRA (float32) for the base GGUF it goes with."""
        import json

        from converters import ConversionError, recover

        published = next(Path(s["directory"]) for s in run.result("download")["snapshots"] if s["role"] == "model")
        out = self._work_dir(run.job) / f"{self._name(run.job)}{LORA_ADAPTER_SUFFIX}"
        _remove_with_leftovers(out)
        # The base's config gives the architecture, whose tensor names and row order the adapter must match.
        base_config = json.loads((self._base_dir(run) / "config.json").read_text("utf-8"))
        try:
            recover.write_lora_gguf(published, base_config, out)
        except ConversionError as error:
            raise _job_error(error) from error
        run.report(1, 1, out.name)
        return {"adapter": str(out)}

    def _built_gguf(self, run: _Run) -> Path:
        built = "quantize" if _has_step(run.job, "quantize") else "convert"
        return Path(run.result(built)["gguf"])

    def _built_adapter(self, run: _Run) -> Path | None:
        return Path(run.result("adapter")["adapter"]) if _has_step(run.job, "adapter") else None

    def _step_smoke_test(self, run: _Run) -> dict[str, Any]:
        """Load the GGUF with llama.cpp and generate a few tokens greedily: it loads, runs and says something."""
        import llama_cpp

        path = self._built_gguf(run)
        adapter = self._built_adapter(run)
        try:
            # logits_all keeps every position's logits, which the finiteness check reads.
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter else None,
                n_ctx=SMOKE_CONTEXT,
                seed=0,
                logits_all=True,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            loaded = f"{path.name} with {adapter.name}" if adapter else path.name
            raise JobError(f"smoke test failed: llama.cpp could not load {loaded} ({error})") from error
        try:
            started = time.perf_counter()
            completion = llm.create_completion(SMOKE_PROMPT, max_tokens=SMOKE_TOKENS, temperature=0.0)
            seconds = time.perf_counter() - started
            finite = bool(np.isfinite(llm.scores[: llm.n_tokens]).all())
        finally:
            llm.close()
        tokens = completion["usage"]["completion_tokens"]
        choice = completion["choices"][0]
        result = {
            "prompt": SMOKE_PROMPT,
            "text": choice["text"],
            "tokens": tokens,
            "finish_reason": choice["finish_reason"],
            "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
            # Garbage weights show up as NaN/inf logits long before they show up in the text.
            "passed": finite and (tokens > 0 or choice["finish_reason"] == "stop"),
        }
        if not result["passed"]:
            raise JobError(
                f"smoke test failed: {path.name} produced non-finite logits or no output; the build is broken"
            )
        run.report(1, 1, f"{result['tokens_per_s']} tokens/s: {result['text']!r}")
        return result

    def _step_register(self, run: _Run) -> dict[str, Any]:
        job = run.job
        name = self._name(job)
        destination = self._destination(job)
        moves = [(self._built_gguf(run), destination)]
        adapter, adapter_destination = self._built_adapter(run), None
        if adapter is not None:
            adapter_destination = destination.with_name(destination.stem + LORA_ADAPTER_SUFFIX)
            moves.append((adapter, adapter_destination))
        for built, target in moves:
            if built.exists():  # absent when a previous run moved it and was killed before recording this step
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(built, target)
        run.report(0, 0, f"sha256 of {destination.name}")
        digest = _sha256(destination)
        adapter_digest = _sha256(adapter_destination) if adapter_destination else None
        variant = self._variant_of(job)
        if job.kind == CATALOG_JOB:
            assert variant is not None
            snapshots = run.result("download")["snapshots"]
            sources = [{"role": s["role"], "repo": s["repo"], "revision": s["revision"]} for s in snapshots]
            inputs = {f"{s['repo']}/{file}": sha for s in snapshots for file, sha in s["files"].items()}
            if "base" in job.params:
                sources.append({"role": "base", "path": job.params["base"]})
            recipe, format_name, stop = variant.recipe.value, variant.prompt_format, list(variant.stop)
        else:
            read = run.result("read")
            sources = [{"path": read["directory"]}]
            inputs = {f"{Path(read['directory']).name}/{n}": sha for n, sha in read["files"].items()}
            format_name = job.params.get("prompt_format")
            recipe, stop = Recipe.NONE.value, list(_format_or_error(format_name).stop) if format_name else []
        lockfile = Lockfile(
            name=name,
            quant=job.quant,
            output_sha256=digest,
            catalog_id=variant.id if variant else None,
            recipe=recipe,
            sources=sources,
            inputs=inputs,
            tools=tool_versions(),
            prompt_format=format_name,
            stop=stop,
            smoke_test=run.result("smoke_test"),
            created_at=_now(),
            lora_adapter=adapter_destination.name if adapter_destination else None,
            lora_adapter_sha256=adapter_digest,
        )
        write_atomically(lockfile_path(destination), lockfile.to_json())
        return {"gguf": str(destination)}


@dataclass(frozen=True)
class RecoveryInputs:
    """What a recovery recipe starts from and where it writes."""

    variant: Variant
    base: Path
    """The base model: the user's copy (``--base``) or the downloaded one."""
    published: Path
    """The variant's downloaded snapshot directory."""
    adapters: list[Path]
    """LoRA adapters to merge into the base, in order."""
    out: Path
    progress: Callable[[Any], None]
    cancel: threading.Event

    @property
    def common(self) -> dict[str, Any]:
        return {"progress": self.progress, "cancel": self.cancel}


# The recipes the recover step implements, each called with ``converters.recover`` (imported when a
# job runs, not with this module) and its inputs. The catalog test checks every supported variant
# names one of these.
RECIPES: dict[Recipe, Callable[[Any, RecoveryInputs], Path]] = {
    Recipe.ADD_DELTA: lambda recover, r: recover.apply_delta(r.base, r.published, r.out, **r.common),
    Recipe.ADD_DELTA_ZERO_PAD: lambda recover, r: recover.apply_delta(
        r.base, r.published, r.out, pad_rows="zero", **r.common
    ),
    Recipe.ADD_DELTA_MEAN_PAD: lambda recover, r: recover.apply_delta(
        r.base, r.published, r.out, pad_rows="mean", dtype=np.float32, expected_sum=r.variant.weight_sum, **r.common
    ),
    Recipe.XOR_FILES: lambda recover, r: recover.xor_files(r.published, r.base, r.out, **r.common),
    Recipe.XOR_KEYSTREAM: lambda recover, r: recover.decrypt_keystream(r.published, r.base, r.out, **r.common),
    Recipe.LORA_MERGE: lambda recover, r: recover.merge_lora(r.base, r.adapters, r.out, **r.common),
}


def catalog_steps(variant: Variant, quant: str, lora: str = LORA_MERGE) -> list[str]:
    """The steps that get a catalog variant as ``quant``, in order.

    With ``lora="runtime"`` recover merges only the ``merge_first`` chain (and is left out without
    one), and "adapter" writes the variant's own adapter before the smoke test, which loads both.
    """
    keeps_adapter = lora == LORA_RUNTIME
    recovers = variant.recipe is not Recipe.NONE and not (keeps_adapter and not variant.merge_first)
    build = _build_steps(quant)
    if keeps_adapter:
        build.insert(build.index("smoke_test"), "adapter")
    return ["download", *(["recover"] if recovers else []), *build]


def _build_steps(quant: str) -> list[str]:
    from converters.convert import DIRECT_TYPES

    return ["convert", *(["quantize"] if quant not in DIRECT_TYPES else []), "smoke_test", "register"]


def _check_lora_mode(variant: Variant, lora: str) -> None:
    if lora not in LORA_MODES:
        raise JobError(f"unknown LoRA mode {lora!r}; choose {' or '.join(LORA_MODES)}")
    if lora == LORA_RUNTIME and variant.recipe is not Recipe.LORA_MERGE:
        raise JobError(
            f"{variant.id} is not released as a LoRA adapter (recipe {variant.recipe.value!r}), "
            "so there is no adapter to apply at run time; get it without --lora runtime"
        )


def _build_label(quant: str, lora: str) -> str:
    """What a build's library name adds to the variant id (see ``registered_name``)."""
    return quant + RUNTIME_LORA_LABEL if lora == LORA_RUNTIME else quant


def _keeps_adapter(job: Job) -> bool:
    return job.params.get("lora") == LORA_RUNTIME


def _job_label(job: Job) -> str:
    return _build_label(job.quant, LORA_RUNTIME if _keeps_adapter(job) else LORA_MERGE)


def _has_step(job: Job, name: str) -> bool:
    return any(step.name == name for step in job.steps)


def _checked_quant(quant: str) -> str:
    from converters import OUTTYPES

    name = quant.lower()
    if name not in OUTTYPES:
        raise JobError(f"unknown quant type {quant!r}; choose one of {', '.join(OUTTYPES)}")
    return name


def _format_or_error(name: str):
    try:
        return prompt_format(name)
    except ValueError as error:
        raise JobError(str(error)) from None


def _job_error(error: Exception) -> JobError:
    from converters import ConversionCancelled

    return JobCancelled() if isinstance(error, ConversionCancelled) else JobError(str(error))
