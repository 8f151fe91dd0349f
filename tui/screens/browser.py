"""The model browser: the seed zoo and the local library in one table, with details, fit and actions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Markdown, OptionList, ProgressBar
from textual.widgets.option_list import Option

from tui.config import Settings
from tui.screens.confirm import ConfirmScreen
from tui.zoo.catalog import Status, shown
from tui.zoo.listing import ModelRow, model_rows

if TYPE_CHECKING:
    from tui.zoo.jobs import Jobs

PREVIEW_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What do pandas eat?"},
]
# Job progress reaches the screen at most this often; a download reports on every chunk.
PROGRESS_INTERVAL = 0.2
DETAIL_DELAY = 0.15
COLUMNS = ("Variant", "Status", "Size", "Params", "Release", "Arch", "License", "Family")
# Longest text a column shows; variant, status and size come first so that they stay on screen.
COLUMN_WIDTHS = {"family": 16, "variant": 30, "status": 24, "arch": 18, "license": 24}
# Below this many columns the details go under the table, whose first five columns then fit 80 columns.
NARROW_BELOW = 110
NARROW_COLUMN_WIDTHS = {"family": 12, "variant": 24, "status": 17, "arch": 12, "license": 12}


def _number(value: float | None, unit: str) -> str:
    return "" if value is None else f"{value:g} {unit}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _text(text: str) -> str:
    """Catalog prose as Markdown text (``catalog.shown``): token names like <s> must not read as HTML tags."""
    return shown(text).replace("\\", "\\\\").replace("<", "\\<").replace("*", "\\*").replace("_", "\\_")


def _notes(notes: tuple[str, ...] | list[str]) -> list[str]:
    """The notes section: confirmed notes first, then those not yet confirmed, under their own heading."""
    confirmed = [note for note in notes if "unverified" not in note]
    unconfirmed = [note.replace(" (unverified)", "") for note in notes if "unverified" in note]
    lines = (["### Notes", ""] + [f"- {_text(note)}" for note in confirmed]) if confirmed else []
    if unconfirmed:
        lines += ["", "### Not yet confirmed at the source", ""]
        lines += [f"- {_text(note)}" for note in unconfirmed]
    return lines + [""]


def describe(row: ModelRow, fit: str) -> str:
    """The detail pane's Markdown: what the model is, how zootui gets it, its prompt and whether it fits."""
    lines = [f"## {row.variant}", ""]
    if row.system is not None:
        lines += [_text(row.system.summary), ""]
    variant = row.catalog_variant
    if variant is not None:
        lines += [
            f"- **Id:** `{variant.id}` · **Hub:** `{variant.hub_id or 'no weights released'}`"
            + (" (gated: log in with `hf auth login`)" if variant.gated else ""),
            f"- **Architecture:** {variant.arch} · {_number(variant.parameters_b, 'B parameters')}"
            f" · download {_number(variant.download_gb, 'GB') or 'size unknown'}",
            f"- **License:** {_text(variant.license)}",
            f"- **Release:** {variant.release_form.value} · **recipe:** {variant.recipe.value}"
            + (
                f" · **base:** {_text(variant.base)}" + (f" (`{variant.base_hub_id}`)" if variant.base_hub_id else "")
                if variant.base
                else ""
            ),
            f"- **Tokenizer:** {_text(variant.tokenizer)}",
            f"- **Status:** {row.status}" + (f" — {_text(row.reason)}" if row.reason else ""),
            "",
        ]
        if variant.status is Status.SUPPORTED:
            from tui.zoo.jobs import catalog_steps, default_quant

            quant = default_quant(variant)
            lines += [f"### Getting it as {quant} (ctrl+g)", ""]
            lines += [f"{index}. {step.title}" for index, step in enumerate(catalog_steps(variant, quant), start=1)]
            lines.append("")
        if variant.prompt_format:
            from tui.zoo.templates import render_prompt

            bos, eos = variant.prompt_tokens
            prompt = render_prompt(variant.prompt_format, PREVIEW_MESSAGES, bos_token=bos, eos_token=eos)
            lines += [f"### Prompt ({variant.prompt_format})", "", "```text", prompt, "```", ""]
        if variant.notes:
            lines += _notes(variant.notes)
    for model in row.library:
        lines.append(f"- **On this machine:** `{model.name}` — {model.path}")
    if row.library:
        lines.append("")
    lines += ["### Fit on this machine", "", fit]
    return "\n".join(lines)


def fit_text(row: ModelRow, settings: Settings, data_dir: Path) -> str:
    """Whether the row's model fits this machine, the short resource named first (Markdown)."""
    from tui.zoo import fit

    variant = row.catalog_variant
    free = fit.free_resources(data_dir)
    try:
        if row.library:
            estimate = fit.fit_gguf(row.library[0].path, n_ctx=settings.engine.n_ctx, free=free)
        elif variant is not None:
            from tui.zoo.jobs import default_quant

            estimate = fit.fit_variant(variant, quant=default_quant(variant), n_ctx=settings.engine.n_ctx, free=free)
        else:
            estimate = None
    except (fit.UnknownShape, ValueError, OSError) as error:
        return f"No estimate: {_text(str(error))}"
    if estimate is None:
        return "No estimate."
    verdict, reason = estimate.verdict.value, estimate.reason
    # The short resource first ("Does not fit — disk: needs 27.0 GB, 20.1 GB free"), then every figure.
    lead = reason if reason.startswith(verdict) else f"{verdict} — {reason}"
    return f"**{lead[0].upper()}{lead[1:]}**\n\n{estimate.summary()}"


class PathScreen(ModalScreen[str | None]):
    """Ask for a path (a GGUF file or a checkpoint directory) or a Hub search."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, placeholder: str):
        super().__init__()
        self._title = title
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
            yield Input(placeholder=self._placeholder)

    @on(Input.Submitted)
    def submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class HubResultsScreen(ModalScreen[str | None]):
    """Hub repositories found by a search; choosing one imports it as a checkpoint."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, query: str, repo_ids: list[str]):
        super().__init__()
        self._query = query
        self._repo_ids = repo_ids

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(
                f"Hub models matching {self._query!r} (enter downloads, converts and adds one)",
                classes="dialog-title",
                markup=False,
            )
            yield OptionList(*[Option(Content(repo_id)) for repo_id in self._repo_ids])

    @on(OptionList.OptionSelected)
    def choose(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._repo_ids[event.option_index])


class JobView(Vertical):
    """One running job: what it does, its step, and a progress bar; x cancels it."""

    def __init__(self, title: str, cancel: threading.Event):
        super().__init__(classes="job")
        self.title = title
        self.cancel = cancel

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="job-title", markup=False)
        yield ProgressBar(total=1.0, show_eta=False)

    def show(self, step: str, index: int, total: int, fraction: float, detail: str) -> None:
        self.query_one(".job-title", Label).update(
            f"{self.title} · step {index}/{total}: {step.replace('_', ' ')} · {detail[:60]}"
        )
        self.query_one(ProgressBar).update(total=1.0, progress=(index - 1 + fraction) / total)


class ModelBrowser(Screen):
    """Catalog and library in one table; typing filters it, enter chats, ctrl+g gets a model.

    The filter keeps the focus: letters typed anywhere on this screen go to it (single-letter actions
    fired by accident deleted a model or started a multi-GB download). Actions take ctrl, and getting or
    deleting a model asks first.
    """

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "chat", "Chat"),
        Binding("ctrl+g", "get", "Get", tooltip="Download, rebuild and convert the model (asks first)"),
        # Priority: the filter box would take ctrl+d as delete-right (the Delete key still does that).
        Binding("ctrl+d", "delete", "Delete", priority=True, tooltip="Delete the model's files (asks first)"),
        Binding("ctrl+o", "import", "Import", tooltip="Add a local GGUF file or checkpoint directory"),
        Binding("ctrl+f", "hub_search", "Hub", tooltip="Search the Hugging Face Hub"),
        # Priority over the filter's cut; only while jobs run, so ctrl+x cuts otherwise.
        Binding("ctrl+x", "cancel_jobs", "Cancel jobs", priority=True),
        Binding("down", "move(1)", "Down", show=False),
        Binding("up", "move(-1)", "Up", show=False),
        Binding("pagedown", "move(10)", "Page down", show=False),
        Binding("pageup", "move(-10)", "Page up", show=False),
    ]

    @dataclass
    class JobUpdate(Message):
        view: JobView
        step: str
        index: int
        total: int
        fraction: float
        detail: str

    @dataclass
    class JobEnded(Message):
        view: JobView
        outcome: str
        error: bool

    @dataclass
    class ChatRequested(Message):
        """Open a chat tab on a library model (the app handles it)."""

        model: str

    def __init__(self, settings: Settings, jobs: Jobs):
        super().__init__()
        self.settings = settings
        self.jobs = jobs
        self.rows: list[ModelRow] = []
        self._shown: list[ModelRow] = []
        self._detail_timer = None
        self._fit: dict[str, str] = {}  # row key -> its fit text, for the confirmation of a get

    def compose(self) -> ComposeResult:
        with Horizontal(classes="browser-body"):
            with Vertical(classes="browser-list"):
                yield Input(
                    placeholder="Type to filter: family, variant, arch, license, status…",
                    id="filter",
                    select_on_focus=False,
                )
                yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(classes="browser-detail"):
                yield Markdown("", id="detail")
        yield Vertical(id="jobs")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.refresh_rows()
        self.query_one("#filter", Input).focus()

    @property
    def filter(self) -> Input:
        return self.query_one("#filter", Input)

    def refresh_rows(self) -> None:
        self.rows = model_rows(self.jobs.catalog, self.jobs.data_dir, self.jobs.store)
        self._show_rows()

    def on_resize(self) -> None:
        self._show_rows()  # column widths follow the screen's width

    def _show_rows(self) -> None:
        table = self.query_one(DataTable)
        selected = self.selected.key if self._shown and table.row_count else None
        self._shown = [row for row in self.rows if row.matches(self.filter.value)]
        widths = NARROW_COLUMN_WIDTHS if self.size.width < NARROW_BELOW else COLUMN_WIDTHS
        table.clear()
        for row in self._shown:
            # Text cells: catalog and file names are shown as written, never read as markup.
            table.add_row(
                *(
                    Text(cell)
                    for cell in (
                        _clip(row.variant, widths["variant"]),
                        _clip(row.status, widths["status"]),
                        _number(None if row.size_gb is None else round(row.size_gb, 2), "GB"),
                        _number(row.parameters_b, "B"),
                        row.release_form,
                        _clip(row.arch.removesuffix("ForCausalLM"), widths["arch"]),
                        _clip(row.license, widths["license"]),
                        _clip(row.family, widths["family"]),
                    )
                ),
                key=row.key,
            )
        keys = [row.key for row in self._shown]
        if selected in keys:
            table.move_cursor(row=keys.index(selected))
        self._show_detail()

    @property
    def selected(self) -> ModelRow | None:
        table = self.query_one(DataTable)
        if not self._shown or table.cursor_row is None or table.cursor_row >= len(self._shown):
            return None
        return self._shown[table.cursor_row]

    @on(Input.Changed, "#filter")
    def filter_rows(self) -> None:
        self._show_rows()

    @on(Input.Submitted, "#filter")
    def chat_from_filter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_chat()

    def action_move(self, rows: int) -> None:
        """Arrow and page keys move through the rows wherever the focus is."""
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + rows)))

    def on_key(self, event: events.Key) -> None:
        # A letter typed while the table (or anything but the filter) has focus goes to the filter.
        if event.is_printable and event.character and self.focused is not self.filter:
            event.stop()
            self.filter.focus()
            self.filter.insert_text_at_cursor(event.character)

    @on(DataTable.RowHighlighted)
    def _show_detail(self) -> None:
        # Wait until the cursor rests: scrolling through rows should not start an estimate per row.
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._describe_selected)

    def _describe_selected(self) -> None:
        row = self.selected
        if row is None:
            self.query_one("#detail", Markdown).update("Nothing matches the filter.")
        else:
            self._describe(row)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _describe(self, row: ModelRow) -> None:
        # The fit estimate reads GGUF metadata and asks nvidia-smi: both can take seconds.
        fit = shown(fit_text(row, self.settings, self.jobs.data_dir))
        self.app.call_from_thread(self._show_description, row, fit, describe(row, fit))

    def _show_description(self, row: ModelRow, fit: str, text: str) -> None:
        self._fit[row.key] = fit
        if self.selected is row:
            self.query_one("#detail", Markdown).update(text)

    @on(DataTable.RowSelected)
    def chat_on_selected(self) -> None:
        self.action_chat()

    def action_chat(self) -> None:
        row = self.selected
        if row is None:
            return
        if not row.library:
            hint = (
                "press ctrl+g to get it first"
                if row.status in ("available", "downloaded")
                else row.reason or row.status
            )
            self.notify(f"{row.variant} is not on this machine: {hint}.", severity="warning", markup=False)
            return
        self.app.post_message(self.ChatRequested(row.library[0].name))
        self.dismiss()

    def action_get(self) -> None:
        row = self.selected
        if row is None or row.catalog_variant is None:
            self.notify("Pick a catalog model to get (library models are already here).", severity="warning")
            return
        variant = row.catalog_variant
        if variant.status is not Status.SUPPORTED:
            self.notify(f"{variant.name}: {row.reason or row.status}.", severity="warning", markup=False)
            return
        if missing := variant.runtime.missing():
            self.notify(f"{variant.name}: {missing}.", severity="warning", markup=False)
            return
        size = _number(variant.download_gb, "GB") or "an unknown size"
        fit = self._fit.get(row.key, "The fit estimate is still being worked out.")

        def start(confirmed: bool | None) -> None:
            if confirmed:
                self._run_job(
                    f"get {variant.id}",
                    lambda jobs, progress, cancel: jobs.get_model(variant.id, progress=progress, cancel=cancel),
                )

        self.app.push_screen(
            ConfirmScreen(
                f"Get {variant.name}?",
                f"Downloads {size} from {variant.hub_id or 'the Hub'}, then rebuilds, converts and quantizes it. "
                f"Finished steps are kept if it stops, and getting it again resumes.\n\n{_plain(fit)}",
                "Get it",
            ),
            start,
        )

    def action_delete(self) -> None:
        row = self.selected
        if row is None or not row.library or row.library[0].lockfile is None:
            self.notify("Only models zootui built or imported can be deleted here.", severity="warning")
            return
        names = ", ".join(model.name for model in row.library)
        size = sum(model.size_bytes for model in row.library) / 1e9

        def delete(confirmed: bool | None) -> None:
            if confirmed:
                self._delete(row)

        self.app.push_screen(
            ConfirmScreen(
                f"Delete {names}?",
                f"Removes {size:.2f} GB: the model's GGUF file(s) and lockfile(s) in zootui's library. "
                "Files of yours that were imported from elsewhere are not touched.",
                "Delete",
            ),
            delete,
        )

    def _delete(self, row: ModelRow) -> None:
        from tui.zoo.jobs import JobError

        try:
            for model in row.library:
                self.jobs.delete_model(model.name)
        except JobError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.notify(f"Deleted {', '.join(model.name for model in row.library)}.", markup=False)
        self.refresh_rows()

    def action_import(self) -> None:
        def start(path_text: str | None) -> None:
            if not path_text:
                return
            path = Path(path_text).expanduser()
            self._run_job(
                f"import {path.name}",
                lambda jobs, progress, cancel: jobs.import_path(path, progress=progress, cancel=cancel),
            )

        self.app.push_screen(
            PathScreen(
                "Import a GGUF file or a Hugging Face checkpoint directory",
                "/path/to/model.gguf or /path/to/checkpoint",
            ),
            start,
        )

    def action_hub_search(self) -> None:
        def search(query: str | None) -> None:
            if query:
                self._search_hub(query)

        self.app.push_screen(PathScreen("Search the Hugging Face Hub", "e.g. vicuna 7b"), search)

    @work(thread=True, exclusive=True, group="hub-search", exit_on_error=False)
    def _search_hub(self, query: str) -> None:
        from tui.zoo.hub import HubError, search_models

        try:
            repo_ids = search_models(query)
        except HubError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error", markup=False)
            return
        self.app.call_from_thread(self._show_hub_results, query, repo_ids)

    def _show_hub_results(self, query: str, repo_ids: list[str]) -> None:
        if not repo_ids:
            self.notify(f"No Hub model matches {query!r}.", severity="warning", markup=False)
            return

        def fetch(repo_id: str | None) -> None:
            if repo_id:
                self._run_job(
                    f"get {repo_id}",
                    lambda jobs, progress, cancel: jobs.import_hub_repo(repo_id, progress=progress, cancel=cancel),
                )

        self.app.push_screen(HubResultsScreen(query, repo_ids), fetch)

    def _run_job(self, title: str, start) -> None:
        cancel = threading.Event()
        view = JobView(title, cancel)
        self.query_one("#jobs", Vertical).mount(view)
        self.refresh_bindings()
        self._job_worker(view, start)

    @work(thread=True, group="jobs", exit_on_error=False, description="Getting a model")
    def _job_worker(self, view: JobView, start) -> None:
        from tui.zoo.jobs import JobError

        last_post = 0.0

        def progress(report) -> None:
            nonlocal last_post
            now = time.monotonic()
            if now - last_post >= PROGRESS_INTERVAL or report.fraction >= 1.0:
                last_post = now
                self.post_message(
                    self.JobUpdate(view, report.step, report.index, report.total, report.fraction, report.detail)
                )

        try:
            model = start(self.jobs, progress, view.cancel)
        except JobError as error:
            self.post_message(self.JobEnded(view, f"{view.title}: {error}", error=True))
            return
        except Exception as error:  # a bug outside the job's steps: the view still ends, saying so
            self.post_message(
                self.JobEnded(view, f"{view.title}: failed unexpectedly ({type(error).__name__}: {error})", error=True)
            )
            raise
        self.post_message(
            self.JobEnded(view, f"{model.name} is ready: select it and press enter to chat.", error=False)
        )

    def on_model_browser_job_update(self, event: JobUpdate) -> None:
        event.view.show(event.step, event.index, event.total, event.fraction, event.detail)

    async def on_model_browser_job_ended(self, event: JobEnded) -> None:
        await event.view.remove()
        self.notify(event.outcome, severity="error" if event.error else "information", timeout=10, markup=False)
        self.refresh_rows()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_jobs":
            return bool(self.query(JobView))
        return True

    def action_cancel_jobs(self) -> None:
        views = list(self.query(JobView))
        for view in views:
            view.cancel.set()
        if views:
            self.notify(f"Cancelling {len(views)} job(s); finished steps are kept and resume next time.")


def _plain(markdown: str) -> str:
    """The fit text for a dialog, without its Markdown emphasis."""
    return markdown.replace("**", "").replace("\\", "")
