"""Jobs against a real local Hub server, real SQLite, the real converters and real llama.cpp.

The tiny zoo: the committed tiny LLaMA checkpoint published as a base repo, a random additive
delta to it published as the chat model, random LoRA adapters on it, and a catalog file that points
at them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from hubserver import HubServer
from support import ROOT
from tinyzoo import (
    BASE_REPO,
    DELTA_REPO,
    LFS_FILES,
    LORA_CHAIN_VARIANT,
    LORA_VARIANT,
    TINY_LLAMA,
    VARIANT,
    TinyZoo,
    repo_files,
    serve_tiny_zoo,
)

import converters.hashing
import tui.zoo.hub_blobs
from tui.config import Settings, with_overrides
from tui.engine import EngineError, Engines, ReplyStats, SamplingParams
from tui.store import DATABASE_NAME, MIGRATIONS, SCHEMA_VERSION, JobState, Store, StoreError
from tui.zoo import library, pull
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import JobCancelled, JobError, JobProgress, Jobs, StepName
from tui.zoo.jobs.steps import STEPS
from tui.zoo.jobs.steps.convert import Convert
from tui.zoo.jobs.steps.download import Downloaded
from tui.zoo.library import DEFAULT_MODEL_NAME, library_models, lockfile_path, resolve_model
from tui.zoo.listing import model_rows
from tui.zoo.templates import prompt_format


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyZoo]:
    with serve_tiny_zoo(tmp_path, monkeypatch) as served:
        yield served


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def steps_run(reports: list[JobProgress]) -> list[str]:
    return list(dict.fromkeys(report.step for report in reports))


def resolve_gets(hub: HubServer) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


KILL_DURING_QUANTIZE = """
import os, signal, sys
from pathlib import Path
from tui.store import DATABASE_NAME, Store
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import Jobs

data, catalog, cache = map(Path, sys.argv[1:4])

def progress(report):
    if report.step == "quantize" and report.bytes_done > 0:
        os.killpg(0, signal.SIGKILL)  # the job and its quantizer child, as a closed terminal kills them

jobs = Jobs(Store(data / DATABASE_NAME), data, load_catalog(catalog), hub_cache=cache, hub_token=False)
jobs.get_model(sys.argv[4], "q4_0", progress=progress)
"""


def test_a_job_killed_during_quantize_resumes_there(zoo: TinyZoo, isolated_dirs: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_DURING_QUANTIZE,
            str(isolated_dirs),
            str(zoo.catalog_path),
            str(zoo.hub_cache),
            VARIANT,
        ],
        env=env,
        start_new_session=True,
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    store = Store(isolated_dirs / DATABASE_NAME)
    [job] = store.jobs()
    assert [(s.name, s.finished) for s in job.steps] == [
        ("download", True),
        ("recover", True),
        ("convert", True),
        ("quantize", False),
        ("smoke_test", False),
        ("register", False),
    ]
    assert job.state == "running"  # nobody was left to record the kill
    finished_at = {s.name: s.finished_at for s in job.steps if s.finished}
    work = isolated_dirs / "work" / str(job.id)
    assert [p.name for p in work.glob(f".{VARIANT}-q4_0.gguf.*.partial")]  # the quantizer's half-written output
    requests_before = len(zoo.hub.requests)

    reports: list[JobProgress] = []
    model = zoo.jobs(isolated_dirs).get_model(VARIANT, "q4_0", progress=reports.append)

    assert steps_run(reports) == ["quantize", "smoke_test", "register"]
    assert {(r.index, r.total) for r in reports if r.step == "quantize"} == {(4, 6)}
    assert len(zoo.hub.requests) == requests_before  # nothing downloaded again
    [job] = store.jobs()
    assert job.state == "done"
    assert {s.name: s.finished_at for s in job.steps if s.name in finished_at} == finished_at
    assert model.name == f"{VARIANT}-q4_0"
    assert model.path == isolated_dirs / "models" / VARIANT / f"{VARIANT}-q4_0.gguf"
    reader = gguf.GGUFReader(model.path)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_0
    assert reader.fields["tokenizer.chat_template"].contents() == prompt_format("vicuna_v1.1").template
    assert model.lockfile.smoke_test["passed"] and model.lockfile.output_sha256 == sha256(model.path)
    assert not work.exists()  # intermediates and the half-written output are gone
    assert sorted(p.name for p in model.path.parent.iterdir()) == [model.path.name, lockfile_path(model.path).name]
    store.close()


HOLD_AT_CONVERT = """
import sys, time
from pathlib import Path
from tui.store import DATABASE_NAME, Store
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import Jobs

data, catalog, cache = map(Path, sys.argv[1:4])
held = False

def progress(report):
    global held
    if report.step == "convert" and report.bytes_done > 0 and not held:
        held = True
        print("converting", flush=True)
        time.sleep(120)  # the test kills it here

jobs = Jobs(Store(data / DATABASE_NAME), data, load_catalog(catalog), hub_cache=cache, hub_token=False)
jobs.get_model(sys.argv[4], "f16", progress=progress)
"""


def test_one_job_per_target_across_processes_and_each_sees_the_others(zoo: TinyZoo, isolated_dirs: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    arguments = [str(isolated_dirs), str(zoo.catalog_path), str(zoo.hub_cache), VARIANT]
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_AT_CONVERT, *arguments], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline() == "converting\n"
        jobs = zoo.jobs(isolated_dirs)
        with pytest.raises(JobError, match=f"^{VARIANT} as f16 is already being built by another job"):
            jobs.get_model(VARIANT, "f16")
        [running] = jobs.running()
        assert running.state == JobState.RUNNING and [j.id for j in jobs.store.jobs()] == [running.id]
        [row] = [row for row in model_rows(zoo.catalog, isolated_dirs, jobs.store) if row.key == VARIANT]
        assert row.status == "getting: convert (3/5)"
    finally:
        other.kill()
        other.wait()
        other.stdout.close()

    # Killed: still recorded as running, but nobody holds its claim, so nobody sees it running and it resumes.
    assert jobs.store.job(running.id).state == JobState.RUNNING and jobs.running() == []
    [row] = [row for row in model_rows(zoo.catalog, isolated_dirs, jobs.store) if row.key == VARIANT]
    assert row.status == "downloaded"
    reports: list[JobProgress] = []
    model = jobs.get_model(VARIANT, "f16", progress=reports.append)
    assert steps_run(reports) == ["convert", "smoke_test", "register"] and model.lockfile.smoke_test["passed"]
    assert [j.id for j in jobs.store.jobs()] == [running.id]


def test_the_lockfile_records_sources_inputs_tools_and_the_smoke_test(zoo: TinyZoo, isolated_dirs: Path):
    model = zoo.jobs(isolated_dirs).get_model(VARIANT, "q8_0")

    lock = model.lockfile
    assert lockfile_path(model.path).read_text("utf-8") == lock.to_json()
    assert (lock.name, lock.catalog_id, lock.quant, lock.recipe) == (model.name, VARIANT, "q8_0", "add-delta")
    assert lock.prompt_format == "vicuna_v1.1"
    assert lock.sources == [
        {"role": "model", "repo": DELTA_REPO, "revision": zoo.commits[DELTA_REPO]},
        {"role": "base", "repo": BASE_REPO, "revision": zoo.commits[BASE_REPO]},
    ]
    published = {f"{DELTA_REPO}/{n}": c for n, c in repo_files(zoo.delta_dir).items()}
    published |= {f"{BASE_REPO}/{n}": c for n, c in repo_files(TINY_LLAMA).items()}
    assert lock.inputs == {name: hashlib.sha256(content).hexdigest() for name, content in published.items()}
    assert set(lock.tools) >= {"zootui", "converters", "llama_cpp_python", "gguf"} and all(lock.tools.values())
    assert lock.output_sha256 == sha256(model.path)
    smoke = lock.smoke_test
    assert smoke["passed"] and smoke["tokens"] > 0 and smoke["tokens_per_s"] > 0 and isinstance(smoke["text"], str)
    # q8_0 is written by the converter directly: no quantize step.
    [job] = Store(isolated_dirs / DATABASE_NAME).jobs()
    assert [s.name for s in job.steps] == ["download", "recover", "convert", "smoke_test", "register"]
    [listed] = [m for m in library_models(isolated_dirs) if m.name == model.name]
    assert (listed.variant_id, listed.quant) == (VARIANT, "q8_0")


def test_a_download_is_read_once_for_its_digests_from_hub_to_lockfile_and_gguf(
    zoo: TinyZoo, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
):
    hashed: Counter[Path] = Counter()
    real = converters.hashing.hash_into

    def counting(digest, path, **options):
        hashed[Path(path).resolve()] += 1
        return real(digest, path, **options)

    # Every sha256 read of a file goes through converters' one hashing loop (sha256_file uses it too): the
    # package's export, its own use, and the Hub download's (which hashes LFS files as their bytes arrive).
    monkeypatch.setattr(converters, "hash_into", counting)
    monkeypatch.setattr(converters.hashing, "hash_into", counting)
    monkeypatch.setattr(tui.zoo.hub_blobs, "hash_into", counting)
    # A LoRA kept for run time converts the downloaded base itself, so the converter's provenance
    # digests are of downloaded files too.
    model = zoo.jobs(isolated_dirs).get_model(LORA_VARIANT, "f16", lora="runtime")

    [job] = Store(isolated_dirs / DATABASE_NAME).jobs()
    downloaded = Downloaded.from_record(job.steps[0].result)
    files = [(s, s.directory / name) for s in downloaded.snapshots for name in s.files]
    # LFS files are hashed as they download and never read for it; the small files kept in git once.
    lfs = LFS_FILES | {"adapter_model.safetensors"}
    assert files and all(hashed[path.resolve()] == (path.name not in lfs) for _, path in files), hashed
    base = next(s for s in downloaded.snapshots if s.repo == BASE_REPO)
    recorded = dict(reversed(entry.split("  ", 1)) for entry in gguf_strings(model.path, "zootui.source.sha256"))
    assert recorded == {name: model.lockfile.inputs[f"{BASE_REPO}/{name}"] for name in recorded}
    assert recorded == {name: sha256(base.directory / name) for name in recorded} and "model.safetensors" in recorded


def gguf_strings(path: Path, key: str) -> list[str]:
    field = gguf.GGUFReader(path).fields[key]
    return [bytes(field.parts[index]).decode() for index in field.data]


def test_a_cancelled_job_keeps_finished_steps_and_resumes(zoo: TinyZoo, isolated_dirs: Path):
    cancel = threading.Event()

    def cancel_during_convert(report: JobProgress) -> None:
        if report.step == "convert" and report.bytes_done > 0:
            cancel.set()

    jobs = zoo.jobs(isolated_dirs)
    with pytest.raises(JobCancelled, match="resume"):
        jobs.get_model(VARIANT, "f16", progress=cancel_during_convert, cancel=cancel)
    [job] = jobs.store.jobs()
    assert job.state == "cancelled"
    assert [s.name for s in job.steps if s.finished] == ["download", "recover"]
    work = isolated_dirs / "work" / str(job.id)
    assert sorted(p.name for p in work.iterdir()) == ["recovered"]  # no half-written GGUF
    gets = len(resolve_gets(zoo.hub))

    reports: list[JobProgress] = []
    model = jobs.get_model(VARIANT, "f16", progress=reports.append)
    assert steps_run(reports) == ["convert", "smoke_test", "register"]
    assert len(resolve_gets(zoo.hub)) == gets
    assert jobs.store.job(job.id).state == "done" and model.path.is_file() and not work.exists()


def test_a_finished_step_whose_output_vanished_is_redone_with_the_steps_after_it(zoo: TinyZoo, isolated_dirs: Path):
    cancel = threading.Event()
    jobs = zoo.jobs(isolated_dirs)
    with pytest.raises(JobCancelled):
        jobs.get_model(VARIANT, "q4_0", progress=lambda r: r.step == "quantize" and cancel.set(), cancel=cancel)
    [job] = jobs.store.jobs()
    assert [s.name for s in job.steps if s.finished] == ["download", "recover", "convert"]
    shutil.rmtree(isolated_dirs / "work" / str(job.id) / "recovered")  # say, removed to free disk space

    reports: list[JobProgress] = []
    jobs.get_model(VARIANT, "q4_0", progress=reports.append)
    assert steps_run(reports) == ["recover", "convert", "quantize", "smoke_test", "register"]


def test_a_failed_download_keeps_what_arrived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path):
    with serve_tiny_zoo(tmp_path, monkeypatch, with_base=False) as zoo:
        jobs = zoo.jobs(isolated_dirs)
        with pytest.raises(JobError, match=f"{BASE_REPO} was not found") as failure:
            jobs.get_model(VARIANT, "f16")
        assert "\n" not in str(failure.value)
        [job] = jobs.store.jobs()
        assert (job.state, job.error) == ("failed", str(failure.value))
        delta_gets = [p for p in resolve_gets(zoo.hub) if DELTA_REPO in p]
        assert delta_gets

        zoo.publish_base()
        model = jobs.get_model(VARIANT, "f16")
        assert [p for p in resolve_gets(zoo.hub) if DELTA_REPO in p] == delta_gets  # the delta came from the cache
        assert [j.id for j in jobs.store.jobs()] == [job.id]  # the same job, resumed
        assert model.lockfile.smoke_test["passed"]


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("tiny-chat-gated", "tiny-gated is gated: accept its terms at .*hf auth login"),
        ("tiny-chat-private-base", "not on the Hub; give your copy with `zootui pull ID --base PATH`"),
        ("tiny-chat-opt", "not supported yet: OPT"),
        ("tiny-chat-unreleased", "released no weights; import your checkpoint with `zootui pull --import DIR`"),
        ("no-such-variant", "no catalog variant 'no-such-variant'"),
    ],
)
def test_user_errors_end_in_one_line(zoo: TinyZoo, isolated_dirs: Path, variant: str, message: str):
    with pytest.raises(JobError, match=message) as failure:
        zoo.jobs(isolated_dirs).get_model(variant, "f16")
    assert "\n" not in str(failure.value)
    assert not (isolated_dirs / "models").exists()


def test_a_base_the_user_brings_replaces_the_download(zoo: TinyZoo, isolated_dirs: Path):
    model = zoo.jobs(isolated_dirs).get_model("tiny-chat-private-base", "f16", base=TINY_LLAMA)
    assert not [p for p in resolve_gets(zoo.hub) if BASE_REPO in p]
    assert {"role": "base", "path": str(TINY_LLAMA.resolve())} in model.lockfile.sources
    reader = gguf.GGUFReader(model.path)
    [embedding] = [t for t in reader.tensors if t.name == "token_embd.weight"]
    np.testing.assert_array_equal(embedding.data, zoo.expected_weights()["model.embed_tokens.weight"])


def test_importing_a_checkpoint_directory_converts_it_with_the_chosen_format(isolated_dirs: Path):
    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    model = jobs.import_checkpoint(TINY_LLAMA, "q8_0", name="my-llama", prompt_format_name="alpaca")
    # The name is usable as given; the quant stays visible in the lockfile and the library's description.
    listed = resolve_model("my-llama", isolated_dirs)
    assert model.name == "my-llama" and listed.path == model.path == isolated_dirs / "models/my-llama/my-llama.gguf"
    assert (listed.quant, listed.description) == ("q8_0", "imported, q8_0")
    [job] = jobs.store.jobs()
    assert (job.kind, [s.name for s in job.steps]) == ("checkpoint", ["read", "convert", "smoke_test", "register"])
    assert model.lockfile.inputs["llama/model.safetensors"] == sha256(TINY_LLAMA / "model.safetensors")
    assert model.lockfile.sources == [{"path": str(TINY_LLAMA.resolve())}] and model.lockfile.catalog_id is None
    reader = gguf.GGUFReader(model.path)
    assert reader.fields["tokenizer.chat_template"].contents() == prompt_format("alpaca").template
    with pytest.raises(JobError, match="already has a model named 'my-llama'"):
        jobs.import_checkpoint(TINY_LLAMA, "q8_0", name="my-llama")
    with pytest.raises(JobError, match="has no config.json|not a"):
        jobs.import_checkpoint(isolated_dirs / "models", "q8_0")


def test_a_gguf_is_imported_with_its_hash_and_deleted(isolated_dirs: Path, tiny_gguf: Path):
    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    model = jobs.import_gguf(tiny_gguf, name="smol-copy")
    assert model.path == isolated_dirs / "models" / "smol-copy" / "smol-copy.gguf"
    assert model.lockfile.output_sha256 == sha256(tiny_gguf) == sha256(model.path)
    assert model.lockfile.quant == "q8_0"
    listed = resolve_model("smol-copy", isolated_dirs)
    assert listed.path == model.path and listed.lockfile == model.lockfile

    jobs.delete_model("smol-copy")
    assert not (isolated_dirs / "models" / "smol-copy").exists()
    assert "smol-copy" not in [m.name for m in library_models(isolated_dirs)]
    with pytest.raises(JobError, match="no model named 'smol-copy'"):
        jobs.delete_model("smol-copy")
    with pytest.raises(JobError, match="ships with zootui"):
        jobs.delete_model(DEFAULT_MODEL_NAME)
    with pytest.raises(JobError, match="not a readable GGUF"):
        jobs.import_gguf(TINY_LLAMA / "config.json")


def test_an_unexpected_error_in_a_step_fails_the_job_with_one_line_and_it_resumes(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(self, context):
        raise ZeroDivisionError("division by zero\nin a step")

    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    with monkeypatch.context() as patch:
        patch.setattr(Convert, "run", broken)
        with pytest.raises(
            JobError, match=r"^convert: unexpected ZeroDivisionError: division by zero in a step; "
        ) as failure:
            jobs.import_checkpoint(TINY_LLAMA, "q8_0", name="my-llama")
    assert "\n" not in str(failure.value)
    [job] = jobs.store.jobs()
    assert (job.state, job.error) == (JobState.FAILED, str(failure.value))
    assert [s.name for s in job.steps if s.finished] == ["read"]

    reports: list[JobProgress] = []
    model = jobs.import_checkpoint(TINY_LLAMA, "q8_0", name="my-llama", progress=reports.append)
    assert steps_run(reports) == ["convert", "smoke_test", "register"]
    assert jobs.store.job(job.id).state == JobState.DONE and model.lockfile.smoke_test["passed"]


def test_a_database_error_in_a_step_ends_the_job_in_its_own_words(isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch):
    def disk_full(self, context):
        raise StoreError("zootui.sqlite3: the disk is full, so the last change was not saved; free some space")

    monkeypatch.setattr(Convert, "run", disk_full)
    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    with pytest.raises(JobError, match="^zootui.sqlite3: the disk is full") as failure:
        jobs.import_checkpoint(TINY_LLAMA, "q8_0")
    assert "bug" not in str(failure.value)
    [job] = jobs.store.jobs()
    assert (job.state, job.error) == (JobState.FAILED, str(failure.value))


def test_ctrl_c_in_a_step_leaves_the_job_resumable_not_running(isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch):
    def interrupted(self, context):
        raise KeyboardInterrupt

    monkeypatch.setattr(Convert, "run", interrupted)
    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    with pytest.raises(KeyboardInterrupt):
        jobs.import_checkpoint(TINY_LLAMA, "q8_0")
    [job] = jobs.store.jobs()
    assert job.state == JobState.CANCELLED and "resume" in job.error


# Step results exactly as the first release of the jobs stored them in job_steps.result.
EARLIER_RECORDS = {
    StepName.DOWNLOAD: {
        "snapshots": [
            {"role": "model", "repo": "o/m", "revision": "a" * 40, "directory": "/cache/m", "files": {"x": "1" * 64}},
            {"role": "base", "repo": "o/b", "revision": "b" * 40, "directory": "/cache/b", "files": {}},
        ]
    },
    StepName.READ: {"directory": "/ckpt", "files": {"config.json": "2" * 64}},
    StepName.RECOVER: {"checkpoint": "/work/1/recovered"},
    StepName.CONVERT: {"gguf": "/work/1/model-f16.gguf"},
    StepName.QUANTIZE: {"gguf": "/work/1/m-q4_0.gguf"},
    StepName.ADAPTER: {"adapter": "/work/1/m.lora.gguf"},
    StepName.VISION: {"vision": "/work/1/m.vision.gguf"},
    StepName.SMOKE_TEST: {
        "prompt": "Hello",
        "text": " there",
        "tokens": 8,
        "finish_reason": "length",
        "tokens_per_s": 12.5,
        "passed": True,
    },
    StepName.REGISTER: {"gguf": "/models/m/m-q4_0.gguf"},
}


@pytest.mark.parametrize("step", list(StepName))
def test_step_results_recorded_by_earlier_releases_still_read(step: StepName):
    result = STEPS[step].result_type.from_record(EARLIER_RECORDS[step])
    assert json.loads(json.dumps(result.to_record())) == EARLIER_RECORDS[step]
    assert all(isinstance(path, Path) for path in result.outputs())


def test_a_job_left_by_an_earlier_release_resumes(isolated_dirs: Path):
    store = Store(isolated_dirs / DATABASE_NAME)
    target = str(TINY_LLAMA.resolve())
    job = store.create_job(
        "checkpoint",
        target,
        "q8_0",
        ["read", "convert", "smoke_test", "register"],
        {"name": "old", "prompt_format": None},
    )
    files = {"config.json": sha256(TINY_LLAMA / "config.json")}
    store.finish_step(job.id, 0, {"directory": target, "files": files})
    store.update_job(job.id, "running")

    reports: list[JobProgress] = []
    model = Jobs(store, isolated_dirs, load_catalog()).import_checkpoint(TINY_LLAMA, "q8_0", progress=reports.append)
    assert steps_run(reports) == ["convert", "smoke_test", "register"]
    assert model.name == "old-q8_0" and model.lockfile.inputs == {"llama/config.json": files["config.json"]}


def test_a_version_1_database_gains_the_job_tables_and_keeps_its_conversations(tmp_path: Path):
    path = tmp_path / DATABASE_NAME
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("INSERT INTO conversations (title, model, created_at, updated_at) VALUES ('kept', 'm', 0, 0)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert [c.title for c in store.conversations()] == ["kept"]
    job = store.create_job("catalog", VARIANT, "q4_0", ["download", "convert"])
    store.finish_step(job.id, 0, {"snapshots": []})
    assert store.unfinished_job("catalog", VARIANT, "q4_0").steps[0].result == {"snapshots": []}
    store.close()


def pull_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="zootui pull")
    pull.add_arguments(parser)
    return parser.parse_args(argv)


def test_pull_imports_a_checkpoint_with_plain_progress_lines(isolated_dirs: Path, capsys: pytest.CaptureFixture[str]):
    assert pull.run(pull_args("--import", str(TINY_LLAMA), "--quant", "q8_0", "--prompt-format", "alpaca")) == 0
    out, err = capsys.readouterr()
    assert out == "llama-q8_0\n"
    assert "[2/4] convert: 100.0%" in err and "\r" not in err  # not a terminal: lines, no redrawn bar
    assert "smoke test passed" in err
    assert resolve_model("llama-q8_0", isolated_dirs).lockfile is not None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give a catalog variant ID or --import PATH"),
        (("no-such-variant",), "no catalog variant 'no-such-variant'"),
        (("vicuna-7b-v1.1", "--quant", "q9_z"), "unknown quant type 'q9_z'"),
        (("--import", "/nonexistent/model.gguf"), "/nonexistent/model.gguf does not exist; give a .gguf file or"),
        (
            ("--import", str(TINY_LLAMA / "config.json")),
            "config.json is neither a GGUF file nor a checkpoint directory",
        ),
        (("vicuna-7b-v1.1", "--name", "mine"), "--name and --prompt-format go with --import"),
        (("vicuna-7b-v1.1", "--lora", "runtime"), "vicuna-7b-v1.1 is not released as a LoRA adapter"),
        (("--import", str(TINY_LLAMA), "--lora", "runtime"), "--lora goes with a catalog variant ID"),
    ],
)
def test_pull_user_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str):
    assert pull.run(pull_args(*argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("zootui: ") and message in err and err.count("\n") == 1


def test_pull_imports_a_file_by_what_it_holds_not_by_its_name(
    isolated_dirs: Path, tmp_path: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
):
    unnamed = tmp_path / "smol-download"
    shutil.copyfile(tiny_gguf, unnamed)
    assert pull.run(pull_args("--import", str(unnamed), "--name", "smol")) == 0
    assert capsys.readouterr().out == "smol\n"
    assert resolve_model("smol", isolated_dirs).lockfile.output_sha256 == sha256(tiny_gguf)

    impostor = tmp_path / "notes.gguf"
    impostor.write_text("not a model")
    assert pull.run(pull_args("--import", str(impostor))) == 2
    assert "notes.gguf is neither a GGUF file nor a checkpoint directory" in capsys.readouterr().err
    assert pull.run(pull_args("--import", str(unnamed), "--name", "other", "--prompt-format", "alpaca")) == 2
    assert "a GGUF keeps its own chat template" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", ".hidden", "x" * 101])
def test_a_name_that_would_leave_the_library_is_refused(
    isolated_dirs: Path, model_path: Path, capsys: pytest.CaptureFixture[str], name: str
):
    for source in (model_path, TINY_LLAMA):
        assert pull.run(pull_args("--import", str(source), "--name", name)) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"zootui: {name!r} cannot name a model") and err.count("\n") == 1
    assert not (isolated_dirs / "models").exists()
    assert not Path("/tmp/abs").exists() and not Path("/tmp/abs.gguf").exists()
    assert [p for p in sorted(isolated_dirs.parent.rglob("*")) if "escaped" in p.name] == []


def test_the_library_is_read_once_until_it_changes(
    isolated_dirs: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
):
    jobs = Jobs(Store(isolated_dirs / DATABASE_NAME), isolated_dirs, load_catalog())
    jobs.import_gguf(tiny_gguf, name="first")
    reads: list[Path] = []
    real = library.read_lockfile
    monkeypatch.setattr(library, "read_lockfile", lambda path: reads.append(path) or real(path))
    engines = Engines(Settings(), isolated_dirs)
    try:
        for _ in range(3):
            assert engines.for_model("first").description
        assert len(reads) <= 1  # the first call may scan; the others reuse it
        reads.clear()
        jobs.import_gguf(tiny_gguf, name="second")  # a change to the library is seen at once
        assert engines.for_model("second") and reads
        jobs.delete_model("first")
        with pytest.raises(EngineError, match="no model named 'first'"):
            engines.for_model("first")
    finally:
        engines.close()


GREEDY_8 = SamplingParams(temperature=0.0, max_tokens=8, n_ctx=256, seed=1)


def greedy_reply(engines: Engines, model: str) -> tuple[str, ReplyStats]:
    events = list(engines.for_model(model).stream([{"role": "user", "content": "Hello"}], GREEDY_8, threading.Event()))
    return "".join(event for event in events if isinstance(event, str)), events[-1]


@pytest.mark.parametrize(
    ("variant", "steps"),
    [
        (LORA_VARIANT, ["download", "convert", "adapter", "smoke_test", "register"]),
        # StackLLaMA's shape: the SFT adapter is merged into the base, the variant's own adapter stays separate.
        (LORA_CHAIN_VARIANT, ["download", "recover", "convert", "adapter", "smoke_test", "register"]),
    ],
)
def test_a_lora_kept_for_run_time_chats_like_the_merged_build(
    zoo: TinyZoo, isolated_dirs: Path, variant: str, steps: list[str]
):
    jobs = zoo.jobs(isolated_dirs)
    runtime = jobs.get_model(variant, "f32", lora="runtime")
    merged = jobs.get_model(variant, "f32")

    merged_job, runtime_job = jobs.store.jobs()
    assert [s.name for s in runtime_job.steps] == steps
    assert "adapter" not in [s.name for s in merged_job.steps]
    assert (runtime.name, merged.name) == (f"{variant}-f32-runtime", f"{variant}-f32")
    adapter = runtime.path.with_name(f"{runtime.name}.lora.gguf")
    assert sorted(p.name for p in runtime.path.parent.iterdir()) == sorted(
        [
            runtime.path.name,
            adapter.name,
            lockfile_path(runtime.path).name,
            merged.path.name,
            lockfile_path(merged.path).name,
        ]
    )
    lock = runtime.lockfile
    assert (lock.lora_adapter, lock.lora_adapter_sha256) == (adapter.name, sha256(adapter))
    assert lock.output_sha256 == sha256(runtime.path)
    assert (
        lock.smoke_test["passed"] and lock.smoke_test["text"] == merged.lockfile.smoke_test["text"]
    )  # with the adapter
    assert (lock.recipe, lock.catalog_id) == ("lora-merge", variant)
    assert merged.lockfile.lora_adapter is None
    assert gguf.GGUFReader(adapter).fields["general.type"].contents() == "adapter"
    listed = [m.name for m in library_models(isolated_dirs) if m.path and m.path.parent == runtime.path.parent]
    assert sorted(listed) == sorted([runtime.name, merged.name])  # the adapter is no model of its own

    engines = Engines(with_overrides(Settings(), "engine", n_ctx=256, n_threads=2), isolated_dirs)
    try:
        adapted, adapted_stats = greedy_reply(engines, runtime.name)
        expected, expected_stats = greedy_reply(engines, merged.name)
        # The same base GGUF by path has no lockfile, so the pool loads it again without the adapter.
        base_alone, _ = greedy_reply(engines, str(runtime.path))
    finally:
        engines.close()
    assert expected_stats.completion_tokens == GREEDY_8.max_tokens
    # Greedy tokens, not logits: the merge rounds the merged weights to the base's float16 while llama.cpp
    # applies the adapter in float32, a difference of about 1e-3 in the logits that moves no argmax here.
    assert (adapted, adapted_stats.completion_tokens) == (expected, expected_stats.completion_tokens)
    assert base_alone != expected  # the adapter matters, so a build or engine that dropped it would fail above


def test_a_lora_job_cancelled_at_the_adapter_resumes_there_on_a_quantized_base(zoo: TinyZoo, isolated_dirs: Path):
    cancel = threading.Event()
    jobs = zoo.jobs(isolated_dirs)
    with pytest.raises(JobCancelled):
        jobs.get_model(
            LORA_VARIANT, "q4_0", lora="runtime", progress=lambda r: r.step == "adapter" and cancel.set(), cancel=cancel
        )
    [job] = jobs.store.jobs()
    assert [s.name for s in job.steps if s.finished] == ["download", "convert", "quantize"]

    reports: list[JobProgress] = []
    model = jobs.get_model(LORA_VARIANT, "q4_0", lora="runtime", progress=reports.append)
    assert steps_run(reports) == ["adapter", "smoke_test", "register"]
    assert (model.lockfile.quant, model.lockfile.smoke_test["passed"]) == ("q4_0", True)
    assert gguf.GGUFReader(model.path).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_0
    assert (model.path.parent / model.lockfile.lora_adapter).is_file()

    jobs.delete_model(model.name)  # the adapter goes with its base
    assert not (isolated_dirs / "models" / LORA_VARIANT).exists()


def test_only_a_lora_release_keeps_its_adapter_for_run_time(zoo: TinyZoo, isolated_dirs: Path):
    jobs = zoo.jobs(isolated_dirs)
    with pytest.raises(
        JobError, match=f"^{VARIANT} is not released as a LoRA adapter \\(recipe 'add-delta'\\)"
    ) as failure:
        jobs.get_model(VARIANT, "f16", lora="runtime")
    assert "\n" not in str(failure.value)
    with pytest.raises(JobError, match="unknown LoRA mode 'sideways'; choose merge or runtime"):
        jobs.get_model(LORA_VARIANT, "f16", lora="sideways")
    assert jobs.store.jobs() == [] and not (isolated_dirs / "models").exists()
