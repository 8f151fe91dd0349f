"""The model browser, driven with Pilot: real catalog, real library files, a real local Hub server."""

from __future__ import annotations

import shutil

from support import wait_until
from textual.widgets import DataTable, Input, Markdown
from tinyzoo import VARIANT, serve_tiny_zoo

from tui.app import ZooApp
from tui.screens.browser import JobView, ModelBrowser
from tui.screens.confirm import ConfirmScreen
from tui.store import DATABASE_NAME, JobState, Store
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import Jobs
from tui.zoo.jobs.steps.recover import Recover
from tui.zoo.library import DEFAULT_MODEL_NAME

WIDE = (160, 44)


def browser(app: ZooApp) -> ModelBrowser:
    assert isinstance(app.screen, ModelBrowser)
    return app.screen


async def open_browser(pilot) -> ModelBrowser:
    await pilot.press("ctrl+b")
    await pilot.pause()
    return browser(pilot.app)


def shown_keys(screen: ModelBrowser) -> list[str]:
    return [row.key for row in screen._shown]


async def select(pilot, screen: ModelBrowser, key: str) -> None:
    screen.query_one(DataTable).move_cursor(row=shown_keys(screen).index(key))
    await pilot.pause()


def detail(screen: ModelBrowser) -> str:
    return screen.query_one("#detail", Markdown).source


async def search_hub(pilot, text: str) -> None:
    """Open the browser and submit a Hub search for text."""
    await open_browser(pilot)
    await pilot.press("ctrl+f")
    await pilot.pause()
    pilot.app.screen.query_one(Input).value = text
    await pilot.press("enter")


async def test_catalog_and_library_in_one_filterable_table(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        catalog_ids = [variant.id for _, variant in load_catalog().variants()]
        assert shown_keys(screen) == [DEFAULT_MODEL_NAME, *catalog_ids]
        screen.filter.insert_text_at_cursor("dolly")  # as typed (keys into the filter: the test below)
        await pilot.pause()
        dolly_ids = [key for key in catalog_ids if key.startswith("dolly")]
        assert set(dolly_ids) <= set(shown_keys(screen)) and all(row.matches("dolly") for row in screen._shown)
        await select(pilot, screen, "dolly-v2-3b")
        dolly = screen.selected
        assert dolly.status == "available" and dolly.arch == "GPTNeoXForCausalLM"
        await wait_until(pilot, lambda: detail(screen).startswith(f"## {dolly.variant}\n"))
        text = detail(screen)
        assert "### Prompt (dolly)" in text and "### Response:" in text
        assert "download" in text and "smoke test" in text and "### Fit on this machine" in text


async def test_unsupported_models_say_why_and_cannot_be_fetched(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        screen.query_one("#filter", Input).value = "openflamingo"
        await pilot.pause()
        row = screen._shown[0]
        assert row.status == "unsupported" and row.reason
        await pilot.press("ctrl+g")
        await pilot.pause()
        reason = row.reason.replace("unverified", "not confirmed")
        assert any(reason in notice.message for notice in app._notifications)
        assert not list(screen.query("JobView"))


async def test_chat_on_a_library_model_opens_a_tab(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        await select(pilot, screen, DEFAULT_MODEL_NAME)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2 and app.active_chat.conversation.id == 2)
        assert not isinstance(app.screen, ModelBrowser)
        assert app.active_chat.conversation.model == DEFAULT_MODEL_NAME


async def test_import_then_delete_a_gguf(fast_settings, isolated_dirs, tmp_path, tiny_gguf):
    copy = tmp_path / "my-smol.gguf"
    shutil.copyfile(tiny_gguf, copy)
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one(Input).value = str(copy)
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: any(row.family == "library" and row.key != DEFAULT_MODEL_NAME for row in screen.rows)
        )
        imported = next(row for row in screen.rows if row.family == "library" and row.key != DEFAULT_MODEL_NAME)
        assert imported.library[0].path.is_file() and imported.status.startswith("in library")
        screen.query_one("#filter", Input).value = imported.key
        await pilot.pause()
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await pilot.pause()
        assert imported.library[0].path.exists(), "escape keeps the model"
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await wait_until(pilot, lambda: imported.key not in [row.key for row in screen.rows])
        assert not imported.library[0].path.exists()
        assert copy.exists(), "the user's own file is never touched"


async def test_importing_a_file_that_is_no_gguf_says_so(fast_settings, isolated_dirs, tmp_path):
    impostor = tmp_path / "weights.bin"
    impostor.write_bytes(b"PK\x03\x04 not a GGUF")
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one(Input).value = str(impostor)
        await pilot.press("enter")
        notice = await job_ended_with(pilot, screen, "is neither a GGUF file nor a checkpoint directory")
        assert notice.severity == "error" and not (isolated_dirs / "models").exists()


async def test_get_runs_the_job_with_progress_and_the_result_chats(fast_settings, isolated_dirs, tmp_path, monkeypatch):
    steps_shown: list[str] = []

    def record(message) -> None:
        if isinstance(message, ModelBrowser.JobUpdate):
            steps_shown.append(message.step)

    with serve_tiny_zoo(tmp_path, monkeypatch) as zoo:
        app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
        async with app.run_test(size=WIDE, message_hook=record) as pilot:
            jobs = Jobs(app.store, isolated_dirs, zoo.catalog, hub_cache=zoo.hub_cache)
            screen = ModelBrowser(fast_settings, jobs)
            await app.push_screen(screen)
            await pilot.pause()
            await select(pilot, screen, VARIANT)
            assert screen.selected.status == "available"
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("enter")
            await wait_until(pilot, lambda: any("is ready" in n.message for n in app._notifications), timeout=180)
            await wait_until(pilot, lambda: not list(screen.query(JobView)))
            row = next(row for row in screen.rows if row.key == VARIANT)
            assert row.status == "converted: q4_k_m", [n.message for n in app._notifications]
            assert steps_shown[0] == "download" and "register" in steps_shown
            await select(pilot, screen, VARIANT)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.tabs.tab_count == 2 and app.active_chat.conversation.id == 2)
            assert app.active_chat.conversation.model == row.library[0].name


async def get_the_tiny_variant(pilot, zoo, settings, data_dir) -> ModelBrowser:
    screen = ModelBrowser(settings, Jobs(pilot.app.store, data_dir, zoo.catalog, hub_cache=zoo.hub_cache))
    await pilot.app.push_screen(screen)
    await pilot.pause()
    await select(pilot, screen, VARIANT)
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
    await pilot.press("enter")
    return screen


async def job_ended_with(pilot, screen: ModelBrowser, text: str):
    """The notification a job's end gave, once the job's view is gone."""
    app = pilot.app
    await wait_until(pilot, lambda: any(text in n.message for n in app._notifications), timeout=120)
    await wait_until(pilot, lambda: not list(screen.query(JobView)))
    [notice] = [n for n in app._notifications if text in n.message]
    return notice


async def test_an_unexpected_error_in_a_step_ends_the_job_view_with_the_failure(
    fast_settings, isolated_dirs, tmp_path, monkeypatch
):
    def broken(self, context):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Recover, "run", broken)
    with serve_tiny_zoo(tmp_path, monkeypatch) as zoo:
        app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
        async with app.run_test(size=WIDE) as pilot:
            screen = await get_the_tiny_variant(pilot, zoo, fast_settings, isolated_dirs)
            notice = await job_ended_with(pilot, screen, "injected failure")
            assert notice.severity == "error" and "recover: unexpected RuntimeError" in notice.message
            [job] = app.store.jobs()
            assert job.state == JobState.FAILED and [s.name for s in job.steps if s.finished] == ["download"]


async def test_an_unexpected_error_outside_the_steps_still_ends_the_job_view(
    fast_settings, isolated_dirs, tmp_path, monkeypatch
):
    def broken(self, *args, **kwargs):
        raise LookupError("injected before any step")

    monkeypatch.setattr(Jobs, "get_model", broken)
    with serve_tiny_zoo(tmp_path, monkeypatch) as zoo:
        app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
        async with app.run_test(size=WIDE) as pilot:
            screen = await get_the_tiny_variant(pilot, zoo, fast_settings, isolated_dirs)
            notice = await job_ended_with(pilot, screen, "injected before")
            assert notice.severity == "error" and "failed unexpectedly (LookupError" in notice.message
            assert app.is_running and app.screen is screen


async def test_hub_search_lists_matching_repositories(fast_settings, isolated_dirs, tmp_path, monkeypatch):
    with serve_tiny_zoo(tmp_path, monkeypatch):
        app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
        async with app.run_test(size=WIDE) as pilot:
            await search_hub(pilot, "tiny-chat")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "HubResultsScreen")
            options = app.screen.query_one("OptionList")
            assert [options.get_option_at_index(i).prompt for i in range(options.option_count)] == [
                "zoo-test/tiny-chat-delta"
            ]


async def test_hub_search_offline_is_one_clear_line(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        await search_hub(pilot, "vicuna")
        await wait_until(pilot, lambda: any("offline" in n.message for n in app._notifications))


async def test_typing_goes_to_the_filter_and_never_fires_an_action(fast_settings, isolated_dirs, tmp_path, tiny_gguf):
    copy = tmp_path / "mycopy.gguf"
    shutil.copyfile(tiny_gguf, copy)
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    app.model_jobs().import_gguf(copy)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        assert app.focused is screen.query_one("#filter", Input)
        await pilot.press(*"mycopy")
        await pilot.pause()
        [row] = screen._shown
        assert row.key.startswith("mycopy")
        screen.query_one(DataTable).focus()  # a click on the table, then more typing
        await pilot.press(*"dgix")
        await pilot.pause()
        assert screen.query_one("#filter", Input).value == "mycopydgix" and app.focused is screen.filter
        assert isinstance(app.screen, ModelBrowser) and not list(screen.query(JobView))
        assert row.library[0].path.is_file(), "d on the table did not delete the model"


async def test_down_from_the_filter_moves_through_the_rows(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        screen.filter.insert_text_at_cursor("vicuna")
        await pilot.pause()
        first = screen.selected
        await pilot.press("down", "down", "up")
        await pilot.pause()
        assert screen.selected is screen._shown[1] and screen.selected is not first
        assert app.focused is screen.filter


async def test_at_80_columns_size_and_release_are_on_screen_and_the_prompt_wraps(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_browser(pilot)
        screen.filter.insert_text_at_cursor("vicuna-7b-v1.3")
        await wait_until(pilot, lambda: "### Prompt" in detail(screen))
        await pilot.pause()
        table = screen.query_one(DataTable)
        shown = table.scrollable_content_region.width
        widths = [column.get_render_width(table) for column in table.columns.values()]
        assert sum(widths[:5]) <= shown, "variant, status, size, params and release fit"
        fence = screen.query_one("#detail MarkdownFence")
        assert fence.region.right <= screen.size.width and fence.virtual_size.width <= fence.size.width


async def test_facts_the_catalog_could_not_check_are_marked_as_not_confirmed(fast_settings, isolated_dirs):
    app = ZooApp(fast_settings, Store(isolated_dirs / DATABASE_NAME))
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_browser(pilot)
        screen.filter.insert_text_at_cursor("vicuna-7b-v0")
        await pilot.pause()
        await select(pilot, screen, "vicuna-7b-v0")
        await wait_until(pilot, lambda: detail(screen).startswith("## Vicuna") and "### Fit" in detail(screen))
        text = detail(screen)
        assert "unverified" not in text
        assert "### Not yet confirmed at the source" in text and "not confirmed" in text


def test_a_model_that_does_not_fit_names_the_short_resource_first(fast_settings, isolated_dirs, monkeypatch):
    from tui.screens.browser import fit_text
    from tui.zoo import fit
    from tui.zoo.listing import model_rows

    monkeypatch.setattr(fit, "free_resources", lambda data_dir: fit.Resources(64 * 10**9, 5 * 10**9, None))
    store = Store(isolated_dirs / DATABASE_NAME)
    [row] = [row for row in model_rows(load_catalog(), isolated_dirs, store) if row.key == "vicuna-7b-v1.3"]
    text = fit_text(row, fast_settings, isolated_dirs)
    assert text.startswith("**Does not fit — disk: needs") and "5.0 GB free" in text.splitlines()[0]
    store.close()
