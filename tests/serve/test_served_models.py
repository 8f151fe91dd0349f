"""What `zootui serve` offers: the library's llama.cpp models, never its chatglm.cpp ones, whose engine
neither completes text nor keeps every message as the server asks (every request to one failed with a 500)."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import ROOT, zootui_command

from converters import CHATGLM_CPP_SUFFIX, convert_chatglm
from tui.serve.command import ServeError, served_models
from tui.zoo.library import DEFAULT_MODEL_NAME, registered_path

GLM_NAME = "chatglm-6b-f32"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve-glm")
    path = registered_path(directory, "chatglm-6b", "f32", suffix=CHATGLM_CPP_SUFFIX)
    path.parent.mkdir(parents=True)
    convert_chatglm(ROOT / "tests" / "fixtures" / "tiny" / "glm6b", path, "f32")
    return directory


def test_chatglm_cpp_models_are_not_served(data_dir):
    assert list(served_models(None, data_dir)) == [DEFAULT_MODEL_NAME]
    with pytest.raises(ServeError, match=f"'{GLM_NAME}' runs on chatglm.cpp, and `zootui serve` runs llama.cpp"):
        served_models([DEFAULT_MODEL_NAME, GLM_NAME], data_dir)


def test_naming_one_is_one_line_and_exit_2(data_dir):
    env = {**os.environ, "ZOOTUI_DATA_DIR": str(data_dir), "ZOOTUI_CONFIG_FILE": str(data_dir / "config.toml")}
    result = subprocess.run(
        zootui_command("serve", "--model", GLM_NAME), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"zootui: '{GLM_NAME}' runs on chatglm.cpp") and result.stderr.count("\n") == 1
