"""ChatGLM-6B v1 and its -int8/-int4 releases from the bundled catalog to a chat tab, through chatglm.cpp.

Each tiny GLM v1 fixture is published on the local Hub under the variant's real Hub id, so the pull uses
the catalog entry itself: it downloads, writes chatglm.cpp's model file in the default type (q4_0),
smoke-tests it in chatglm.cpp and registers it; the app then chats with it in a tab. Without the `glm`
extra, `zootui pull` and the model browser say in one line what to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, SIZE, chat_in_app, needs_glm_extra
from tinyzoo import pull_from_local_hub, repo_files

from tui.app import ZooApp
from tui.engine import Engines
from tui.engine.chatglm import ChatGLMEngine
from tui.store import DATABASE_NAME, Store
from tui.zoo.jobs import StepName
from tui.zoo.library import CHATGLM_CPP_SUFFIX

TINY = ROOT / "tests" / "fixtures" / "tiny"
pytestmark = pytest.mark.cpu_to_itself  # tests/conftest.py: chatglm.cpp's threads spin
PUBLISHED = {"chatglm-6b": "glm6b", "chatglm-6b-int8": "glm6b_int8", "chatglm-6b-int4": "glm6b_int4"}
# Runs the CLI as if the glm extra were not installed.
WITHOUT_THE_EXTRA = """
import importlib.util, sys
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "chatglm_cpp" else find_spec(name, *a)
from tui.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@needs_glm_extra
@pytest.mark.parametrize("variant_id", PUBLISHED)
async def test_chatglm_6b_is_pulled_converted_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    files = repo_files(TINY / PUBLISHED[variant_id])
    model, store = pull_from_local_hub(variant_id, files, tmp_path, monkeypatch, isolated_dirs)

    [job] = store.jobs()
    assert [step.name for step in job.steps] == [
        StepName.DOWNLOAD,
        StepName.CONVERT,
        StepName.SMOKE_TEST,
        StepName.REGISTER,
    ]
    assert model.path.suffix == CHATGLM_CPP_SUFFIX and model.name == f"{variant_id}-q4_0"
    assert model.lockfile.quant == "q4_0" and model.lockfile.smoke_test["passed"]
    assert model.path.read_bytes()[:4] == b"ggml"

    assert isinstance(Engines(fast_settings, isolated_dirs).for_model(model.name), ChatGLMEngine)
    saved = await chat_in_app(fast_settings, store, model.name, "动物园几点开门？")
    assert saved[1].stats["prompt_tokens"] > 0
    store.close()


def test_without_the_extra_pull_says_what_to_install(cli_env):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA, "pull", "chatglm-6b"],
        check=False,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zootui: chatglm-6b: it runs on chatglm.cpp, an optional engine that is not installed:"
        " pip install 'zootui[glm]' (it compiles chatglm.cpp; see the README)"
    ]


async def test_without_the_extra_the_browser_says_what_to_install(monkeypatch, isolated_dirs, fast_settings):
    import importlib.util

    from textual.widgets import DataTable, Input

    from tui.screens.browser import ModelBrowser

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "chatglm_cpp" else find_spec(name, *a)
    )
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+b")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelBrowser)
        screen.query_one("#filter", Input).value = "chatglm-6b-int4"
        await pilot.pause()
        [row] = screen._shown
        assert row.status == "needs zootui[glm]" and "pip install 'zootui[glm]'" in row.reason
        screen.query_one(DataTable).focus()
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert app.screen is screen, "nothing to confirm: it cannot be got"
        assert [notice.message for notice in app._notifications] == [
            "ChatGLM-6B int4: it runs on chatglm.cpp, an optional engine that is not installed:"
            " pip install 'zootui[glm]' (it compiles chatglm.cpp; see the README)."
        ]
        assert not list(screen.query("JobView"))
