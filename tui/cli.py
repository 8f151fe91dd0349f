"""Command line: `zootui` opens the app; subcommands work headless, for scripts and SSH.

Only the bare `zootui` imports Textual. Every other path imports what it
needs inside its handler, so `zootui --version` and `zootui chat` start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from converters import EXIT_INTERRUPTED, EXIT_USER_ERROR
from tui import __version__

if TYPE_CHECKING:
    from tui.zoo.catalog import Variant
    from tui.zoo.fit import Resources
    from tui.zoo.library import LibraryModel


class UserError(Exception):
    """Ends the command with its one-line message and exit code 2."""


# Command-line options that override a setting, checked as the config file's value would be.
_SETTING_OPTIONS = {
    "n_ctx": ("engine", "n_ctx", "--n-ctx"),
    "threads": ("engine", "n_threads", "--threads"),
    "gpu_layers": ("engine", "n_gpu_layers", "--gpu-layers"),
    "max_tokens": ("chat", "max_tokens", "--max-tokens"),
    "temperature": ("chat", "temperature", "--temperature"),
    "top_p": ("chat", "top_p", "--top-p"),
    "top_k": ("chat", "top_k", "--top-k"),
    "repeat_penalty": ("chat", "repeat_penalty", "--repeat-penalty"),
    "seed": ("chat", "seed", "--seed"),
}


def _check_options(args: argparse.Namespace) -> None:
    """UserError (one line) for a command-line value outside what its setting accepts: before anything runs
    or is saved, so a bad --n-ctx never reaches a conversation."""
    from tui.config import ChatSettings, EngineSettings, check_option

    sections = {"engine": EngineSettings, "chat": ChatSettings}
    for attribute, (section, name, option) in _SETTING_OPTIONS.items():
        value = getattr(args, attribute, None)
        if value is None:
            continue
        try:
            setattr(args, attribute, check_option(sections[section], name, value, option))
        except ValueError as error:
            raise UserError(str(error)) from None


def _load_settings(args: argparse.Namespace, *, print_warnings: bool = True):
    """The config with command-line overrides, and its warnings (printed to stderr unless asked not to)."""
    from tui.config import load_config, with_overrides

    loaded = load_config()
    if print_warnings:
        for warning in loaded.warnings:
            print(f"zootui: {warning}", file=sys.stderr)
    settings = with_overrides(
        loaded.settings,
        "engine",
        n_ctx=getattr(args, "n_ctx", None),
        n_threads=getattr(args, "threads", None),
        n_gpu_layers=getattr(args, "gpu_layers", None),
    )
    return settings, loaded.warnings


def _open_store():
    """The database, with replies a killed process left streaming marked interrupted (as the app does)."""
    from tui.chat import interrupted_notice
    from tui.store import Store, StoreError

    try:
        store = Store.open_default()
        interrupted = store.mark_interrupted_replies()
    except StoreError as error:
        raise UserError(str(error)) from error
    if interrupted:
        print(f"zootui: {interrupted_notice(interrupted)}.", file=sys.stderr)
    return store


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (override [engine] in the config)")
    group.add_argument("--n-ctx", type=int, metavar="N", help="context length a local model is loaded with")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads for replies (0: chosen for this machine)")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers offloaded to the GPU (-1: all)")


def command_tui(args: argparse.Namespace) -> int:
    from tui.terminal import keys_kept_as_typed

    with keys_kept_as_typed() as typed_ahead:
        # Inside the full-screen app, warnings are shown as notifications instead.
        settings, warnings = _load_settings(args, print_warnings=False)
        store = _open_store()
        from tui.app import ZooApp

        ZooApp(settings, store, new_chat_model=args.model, config_warnings=warnings, typed_ahead=typed_ahead).run()
    return 0


def command_chat(args: argparse.Namespace) -> int:
    import threading

    from tui.chat import ChatService, ReplyHeld, title_from
    from tui.config import data_dir
    from tui.engine import EngineError, Engines
    from tui.store import StoreError

    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            raise UserError("give a PROMPT, or pipe one on standard input.")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise UserError("the prompt is empty.")
    settings, _ = _load_settings(args)
    store = _open_store()
    engines = Engines(settings, data_dir())
    service = ChatService(store, settings, engines)
    continued = None
    if args.conversation is not None:
        try:
            continued = store.conversation(args.conversation)
        except StoreError as error:
            raise UserError(str(error)) from error
    image = None
    if args.image is not None:  # checked before anything is saved, so a refused image leaves no trace
        from tui.images import ImageError

        model = args.model or (continued.model if continued else settings.chat.default_model)
        try:
            image = service.attach_image(model, Path(args.image))
        except (EngineError, ImageError) as error:
            raise UserError(str(error)) from error
    if continued is not None:
        conversation = continued
        changes = {key: value for key, value in (("model", args.model), ("system_prompt", args.system)) if value}
        if changes:
            conversation = store.update_conversation(conversation.id, **changes)
    else:
        conversation = service.new_conversation(model=args.model, system_prompt=args.system, title=title_from(prompt))
    overrides = {
        key: value
        for key, value in (
            ("max_tokens", args.max_tokens),
            ("temperature", args.temperature),
            ("seed", args.seed),
            ("top_p", args.top_p),
            ("top_k", args.top_k),
            ("repeat_penalty", args.repeat_penalty),
            ("n_ctx", args.n_ctx),
        )
        if value is not None
    }
    if overrides:
        conversation = store.update_conversation(
            conversation.id, params={**service.params(conversation).to_dict(), **overrides}
        )
    request = service.add_user_message(conversation, prompt, image)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        reply = service.reply(conversation, threading.Event(), write)
    except ReplyHeld as error:  # the moderation model saw it: kept, with its label, to be sent anyway
        raise UserError(str(error)) from error
    except EngineError as error:
        # A request that never reached a model leaves nothing behind (a new conversation, a changed model).
        service.forget_request(conversation, request, continued)
        raise UserError(str(error)) from error
    except StoreError as error:
        raise UserError(f"{error} The reply so far was printed; what was saved of it is kept.") from error
    except KeyboardInterrupt:
        print(f"\nzootui: stopped; the partial reply is saved in conversation {conversation.id}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        engines.close()
    sys.stdout.write("\n")
    if reply.stats is not None and not args.quiet:
        print(f"[conversation {conversation.id} · {reply.stats.summary()}]", file=sys.stderr)
    return 0


def command_models(args: argparse.Namespace) -> int:
    from tui.config import data_dir
    from tui.engine.local import gpu_offload_summary
    from tui.zoo.fit import free_resources
    from tui.zoo.library import library_models

    settings, _ = _load_settings(args)
    n_ctx = settings.engine.n_ctx
    quant = _catalog_quant(args.quant) if args.all else None
    free = free_resources(data_dir())
    library = [_library_entry(model, n_ctx, free) for model in library_models(data_dir())]
    catalog = _catalog_entries(quant, n_ctx, free) if quant else []
    if args.json:
        print(json.dumps(library + catalog, ensure_ascii=False, indent=2))
        return 0
    if library:
        width = max(len(entry["name"]) for entry in library)
        for entry in library:
            print(f"{entry['name']:<{width}}  {entry['size_bytes'] / 1e6:8.1f} MB  {entry['description']}")
            print(f"{'':<{width}}  {_fit_line(entry['fit'])}")
    else:
        print("No models yet: the default model's package is missing; reinstall zootui.")
    if catalog:
        print(f"\nCatalog (fit as {quant} at {n_ctx} tokens of context; get one with `zootui pull ID`):")
        width = max(len(entry["id"]) for entry in catalog)
        for entry in catalog:
            note = _fit_line(entry["fit"]) if entry["status"] != "unsupported" else entry["reason"]
            if entry["job"] is not None:
                job = entry["job"]
                note = f"{job['status']} as {job['quant']} (job {job['id']}, running now); " + note
            print(f"{entry['id']:<{width}}  {entry['status']:<11}  {note}")
    print("\nAlso: any path to a .gguf file, or remote:NAME for a model on the [remote] server.")
    print(gpu_offload_summary(settings.engine.n_gpu_layers))
    return 0


def _fit_line(fit: dict) -> str:
    return fit["summary"] if fit["verdict"] is not None else f"fit unknown: {fit['reason']}"


def _library_entry(model: LibraryModel, n_ctx: int, free: Resources) -> dict:
    """A library model with its catalog link (from its lockfile) and its fit, for `zootui models`."""
    from tui.zoo.catalog import load_catalog
    from tui.zoo.fit import fit_gguf

    path = model.path
    assert path is not None, "library_models lists local files only"
    try:
        estimate = fit_gguf(path, n_ctx=n_ctx, free=free)
        fit, arch = estimate.to_dict(), estimate.shape.arch
    except (OSError, ValueError) as error:  # a damaged file is listed with the reason, not a crash
        fit, arch = {"verdict": None, "reason": f"cannot read {path.name}: {error}"}, None
    system = variant = None
    if model.variant_id is not None:
        try:
            system, variant = load_catalog().variant(model.variant_id)
        except KeyError:  # built from a catalog entry that has since been renamed or removed
            pass
    return {
        "source": "library",
        "id": model.name,
        "name": model.name,
        "family": system.id if system else None,
        "variant": variant.name if variant else None,
        "arch": arch,
        "release_form": variant.release_form.value if variant else None,
        "status": "ready",
        "reason": None,
        "path": str(path),
        "size_bytes": model.size_bytes,
        "description": model.description,
        "quant": model.quant or fit.get("quant"),
        "fit": fit,
    }


def _catalog_quant(requested: str | None) -> str:
    """The weight type catalog estimates assume: the one asked for, else the one `zootui pull` makes."""
    from tui.zoo.fit import bits_per_weight
    from tui.zoo.jobs import DEFAULT_QUANT

    quant = requested or DEFAULT_QUANT
    try:
        bits_per_weight(quant)
    except ValueError as error:
        raise UserError(str(error)) from error
    return quant


def _catalog_entries(quant: str, n_ctx: int, free: Resources) -> list[dict]:
    """Every catalog variant, with the quant types the library has it in and its fit as ``quant``."""
    from tui.config import data_dir
    from tui.zoo.catalog import load_catalog
    from tui.zoo.fit import UnknownShape, fit_variant
    from tui.zoo.library import converted_quants
    from tui.zoo.listing import running_by_target, running_status

    in_library = converted_quants(data_dir())
    store = _open_store()
    running = running_by_target(store, data_dir())
    store.close()
    catalog = load_catalog()
    entries = []
    for row in catalog.rows():
        try:
            fit = fit_variant(catalog.variant(row["id"])[1], quant=quant, n_ctx=n_ctx, free=free).to_dict()
        except UnknownShape as error:
            fit = {"verdict": None, "reason": str(error)}
        job = running.get(row["id"])
        entries.append(
            {
                "source": "catalog",
                **row,
                "in_library": in_library.get(row["id"], []),
                "job": None if job is None else {"id": job.id, "quant": job.quant, "status": running_status(job)},
                "fit": fit,
            }
        )
    return entries


def command_prompt(args: argparse.Namespace) -> int:
    from jinja2 import TemplateError

    from tui.zoo.templates import render_template

    messages = _read_messages(args.messages)
    template, bos_token, eos_token = _prompt_template(args.model)
    try:
        prompt = render_template(template, messages, bos_token, eos_token)
    except TemplateError as error:  # a template may refuse a message list, or go past a rendering limit
        raise UserError(f"the chat template of {args.model} cannot render these messages: {error}") from error
    sys.stdout.write(prompt)
    return 0


def _read_messages(source: str) -> list[dict]:
    """An OpenAI-style message list from a JSON file (or stdin for "-"): a list, or {"messages": list}."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
    except OSError as error:
        raise UserError(f"cannot read {source}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{source} is not UTF-8 text") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{source} is not valid JSON: {error}") from error
    messages = document.get("messages") if isinstance(document, dict) else document
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise UserError(
            f"{source} must hold a non-empty list of messages like "
            f'[{{"role": "user", "content": "Hi"}}] (roles: system, user, assistant)'
        )
    return messages


def _prompt_template(reference: str) -> tuple[str, str, str]:
    """(chat template, BOS text, EOS text) for a prompt format, a catalog variant or a model."""
    from tui.config import data_dir
    from tui.zoo.catalog import Status, load_catalog, shown
    from tui.zoo.library import ModelNotFound, resolve_model
    from tui.zoo.templates import FORMATS

    catalog = load_catalog()
    if reference in FORMATS:
        # The format's tokens are those of the models that use it; prefer one zootui can run.
        users = [v for _, v in catalog.variants() if v.prompt_format == reference]
        users.sort(key=lambda v: v.status is Status.UNSUPPORTED)
        return _format_template(users[0])
    try:
        _, variant = catalog.variant(reference)
    except KeyError:
        pass
    else:
        if variant.prompt_format is None:
            raise UserError(
                f"{variant.id} has no chat prompt format ({shown(variant.reason) if variant.reason else 'it is not a chat model'})"
            )
        return _format_template(variant)
    try:
        model = resolve_model(reference, data_dir())
    except ModelNotFound as error:
        raise UserError(f"{reference!r} is not a prompt format, a catalog variant or a model: {error}") from error
    if model.path is None:
        raise UserError(f"{reference} is prompted by its server's own template, which zootui cannot see")
    return _gguf_template(model.path)


def _format_template(variant: Variant) -> tuple[str, str, str]:
    from tui.zoo.templates import FORMATS

    assert variant.prompt_format is not None
    return (FORMATS[variant.prompt_format].template, *variant.prompt_tokens)


def _gguf_template(path: Path) -> tuple[str, str, str]:
    """The GGUF's own chat template and BOS/EOS texts, read the way the local engine reads them."""
    import gguf

    from tui.engine.local import CHATML_TEMPLATE
    from tui.zoo.gguf_header import read_header

    try:
        metadata = read_header(path, string_arrays=(gguf.Keys.Tokenizer.LIST,)).metadata
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable GGUF file ({error})") from error
    tokens = metadata.get(gguf.Keys.Tokenizer.LIST) or []

    def token_text(id_key: str) -> str:
        # As llama-cpp-python does when it wraps a GGUF's template: a missing token is an empty string.
        token_id = metadata.get(id_key)
        valid = isinstance(token_id, int) and not isinstance(token_id, bool) and 0 <= token_id < len(tokens)
        return tokens[token_id] if valid else ""

    template = metadata.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return (
        template if isinstance(template, str) else CHATML_TEMPLATE,
        token_text(gguf.Keys.Tokenizer.BOS_ID),
        token_text(gguf.Keys.Tokenizer.EOS_ID),
    )


def command_pull(args: argparse.Namespace) -> int:
    from tui.zoo.pull import run

    return run(args)


def command_search(args: argparse.Namespace) -> int:
    hits = _open_store().search(args.text, limit=args.limit)
    if args.json:
        print(json.dumps([hit.__dict__ for hit in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print(f"No message contains {args.text!r}.")
        return 1
    for hit in hits:
        print(f"{hit.conversation_id:>5}  {hit.conversation_title[:30]:<30}  {hit.role:<9}  {hit.snippet}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    from datetime import datetime

    for conversation in _open_store().conversations():
        when = datetime.fromtimestamp(conversation.updated_at).strftime("%Y-%m-%d %H:%M")
        print(f"{conversation.id:>5}  {when}  {conversation.model:<24}  {conversation.title}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from tui.export import export
    from tui.store import StoreError

    store = _open_store()
    try:
        conversation = store.conversation(args.id)
    except StoreError as error:
        raise UserError(str(error)) from error
    from tui.config import data_dir

    messages = store.messages(conversation.id)
    text = export(conversation, messages, args.format, data_dir(), store.all_messages(conversation.id))
    if args.output:
        _write_export(Path(args.output).expanduser(), text, force=args.force)
        print(f"Wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write_export(path: Path, text: str, *, force: bool) -> None:
    """Write an export where the user pointed -o: into a directory that exists, replacing a file only with --force."""
    from tui.files import write_atomically

    if path.is_dir():
        raise UserError(f"-o {path} is a directory; give a file name inside it, such as {path / 'conversation.md'}")
    if not path.parent.is_dir():
        raise UserError(f"-o {path}: the directory {path.parent} does not exist; create it first or choose another")
    if path.exists() and not force:
        raise UserError(f"-o {path} already exists; give --force to replace it, or choose another name")
    try:
        write_atomically(path, text, create_parents=False)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}; choose another place with -o") from error


def _arena_service(settings):
    from tui.arena.service import ArenaService
    from tui.config import data_dir
    from tui.engine import Engines

    return ArenaService(_open_store(), settings, Engines(settings, data_dir()))


def _check_models_exist(names: list[str]) -> None:
    from tui.config import data_dir
    from tui.zoo.library import ModelNotFound, resolve_model

    for name in names:
        try:
            resolve_model(name, data_dir())
        except ModelNotFound as error:
            raise UserError(str(error)) from error


def command_arena(args: argparse.Namespace) -> int:
    from tui.arena import RANDOM, ArenaError
    from tui.arena.commands import is_headless, pair_choice, run_headless

    try:
        pair = pair_choice(args.models)
        if not is_headless(args):
            _check_models_exist([name for name in pair if name != RANDOM])
            settings, warnings = _load_settings(args, print_warnings=False)
            store = _open_store()
            from tui.app import ZooApp

            ZooApp(settings, store, config_warnings=warnings, arena=pair).run()
            return 0
        settings, _ = _load_settings(args)
        service = _arena_service(settings)
        try:
            return run_headless(args, service)
        finally:
            service.close()
            service.engines.close()
    except ArenaError as error:
        raise UserError(str(error)) from error


def command_leaderboard(args: argparse.Namespace) -> int:
    from tui.arena import ArenaError
    from tui.arena.commands import run_leaderboard

    settings, _ = _load_settings(args)
    try:
        return run_leaderboard(args, _arena_service(settings))
    except ArenaError as error:
        raise UserError(str(error)) from error


def command_serve(args: argparse.Namespace) -> int:
    from tui.serve.command import ServeError, run

    settings, _ = _load_settings(args)
    try:
        return run(args, settings)
    except ServeError as error:
        raise UserError(str(error)) from error


def command_config(args: argparse.Namespace) -> int:
    from tui.config import Settings, config_path, load_config, render_toml

    if args.action == "path":
        print(config_path())
        return 0
    if args.defaults:
        print(render_toml(Settings()), end="")
        return 0
    loaded = load_config()
    for warning in loaded.warnings:
        print(f"zootui: {warning}", file=sys.stderr)
    state = "exists" if loaded.path.exists() else "does not exist yet; these are the defaults"
    print(f"# {loaded.path} ({state})")
    print(render_toml(loaded.settings), end="")
    return 0


def build_parser(*, pull_arguments: bool = False) -> argparse.ArgumentParser:
    """The command line; ``pull_arguments`` adds `pull`'s own options, which cost a heavy import."""
    parser = argparse.ArgumentParser(
        prog="zootui",
        description="Browse, convert and chat with the 2023 zoo of open chat models. "
        "With no command, opens the full-screen app.",
    )
    parser.add_argument("--version", action="version", version=f"zootui {__version__}")
    parser.add_argument(
        "-m", "--model", help="model for new conversations (a library name, a .gguf path, or remote:NAME)"
    )
    _add_engine_options(parser)
    parser.set_defaults(handler=command_tui)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    chat = commands.add_parser(
        "chat",
        help="send one message and stream the reply to stdout",
        description="Send PROMPT (or standard input) and stream the reply to stdout. "
        "The exchange is saved like any conversation.",
    )
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="the message; read from stdin when left out")
    chat.add_argument("-m", "--model", help="a library name, a .gguf path, or remote:NAME")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument(
        "--image", metavar="PATH", help="attach a picture (PNG, JPEG, GIF, WebP, BMP) for a model that sees images"
    )
    chat.add_argument("--max-tokens", type=int, metavar="N", help="longest reply in tokens")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0: greedy)")
    chat.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling threshold")
    chat.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens")
    chat.add_argument("--repeat-penalty", type=float, metavar="R", help="penalty for repeated tokens")
    chat.add_argument("--seed", type=int, metavar="S", help="random seed (-1: a new one each time)")
    chat.add_argument("-c", "--conversation", type=int, metavar="ID", help="continue this conversation")
    chat.add_argument("-q", "--quiet", action="store_true", help="do not print the reply's figures to stderr")
    _add_engine_options(chat)
    chat.set_defaults(handler=command_chat)

    models = commands.add_parser(
        "models",
        help="list the models you can chat with, and whether they fit",
        description="List the library with an estimate of the RAM, disk and GPU "
        "layers each model needs; --all adds every catalog variant.",
    )
    models.add_argument("--all", action="store_true", help="add every catalog variant (why, when unsupported)")
    models.add_argument(
        "--quant",
        type=str.lower,
        metavar="TYPE",
        help="with --all: estimate catalog variants as this type (default: pull's default type)",
    )
    models.add_argument(
        "--n-ctx", type=int, metavar="N", help="context length to estimate for (default: [engine] n_ctx)"
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(handler=command_models)

    prompt = commands.add_parser(
        "prompt",
        help="print the exact text a model receives for a message list",
        description="Render an OpenAI-style message list the way MODEL_OR_FAMILY "
        "receives it: a prompt format name, a catalog variant id, a "
        "library model or a .gguf path (its own chat template).",
    )
    prompt.add_argument("model", metavar="MODEL_OR_FAMILY")
    prompt.add_argument(
        "--messages",
        required=True,
        metavar="FILE",
        help='JSON list of {"role": ..., "content": ...} messages ("-": standard input)',
    )
    prompt.set_defaults(handler=command_prompt)

    pull = commands.add_parser(
        "pull",
        help="download, rebuild, convert and quantize a catalog model, or import "
        "one (`zootui pull --help` for its options)",
    )
    if pull_arguments:
        # The job module imports converters and huggingface_hub: only `zootui pull` pays for that.
        from tui.zoo.pull import add_arguments

        add_arguments(pull)
    pull.set_defaults(handler=command_pull)

    search = commands.add_parser("search", help="search every conversation")
    search.add_argument("text", metavar="TEXT")
    search.add_argument("--limit", type=int, default=50, metavar="N", help="most results to show (default 50)")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.set_defaults(handler=command_search)

    listing = commands.add_parser("list", help="list conversations, newest first")
    listing.set_defaults(handler=command_list)

    export = commands.add_parser("export", help="export a conversation as Markdown or JSON")
    export.add_argument("id", type=int, metavar="ID", help="conversation id (see `zootui list`)")
    export.add_argument("--format", choices=("md", "json"), default="md", help="md (default) or json")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.add_argument("--force", action="store_true", help="with -o: replace FILE if it exists")
    export.set_defaults(handler=command_export)

    arena = commands.add_parser(
        "arena",
        help="two hidden models answer the same prompts; you vote (opens the arena, or runs battles unattended)",
        description="Open the arena: two models, named only after your vote, answer the same prompts side by "
        "side. With --prompts, run battles unattended to vote on later; --export and --import read and write "
        "FastChat's battle-log JSON.",
    )
    from tui.arena.commands import add_arena_arguments, add_leaderboard_arguments

    add_arena_arguments(arena)
    _add_engine_options(arena)
    arena.set_defaults(handler=command_arena)

    leaderboard = commands.add_parser(
        "leaderboard",
        help="ratings from your arena votes: Bradley-Terry with intervals, online Elo, win rates",
        description="Rate the models from the arena's votes as FastChat's Chatbot Arena does.",
    )
    add_leaderboard_arguments(leaderboard)
    leaderboard.set_defaults(handler=command_leaderboard)

    serve = commands.add_parser(
        "serve",
        help="serve the library over an OpenAI-compatible HTTP API (needs the serve extra)",
        description="Serve library models over OpenAI's HTTP API (GET /v1/models, POST /v1/chat/completions "
        "and /v1/completions, streaming or not), through the same engine as the app. Listens on 127.0.0.1; "
        "any other address needs the API key in $ZOOTUI_SERVE_API_KEY.",
    )
    from tui.serve.command import add_arguments as add_serve_arguments

    add_serve_arguments(serve)
    _add_engine_options(serve)
    serve.set_defaults(handler=command_serve)

    config = commands.add_parser("config", help="where the config file is, and what it says")
    config.add_argument(
        "action",
        choices=("path", "show"),
        help="path: print its location; show: print the settings in effect, documented",
    )
    config.add_argument("--defaults", action="store_true", help="with show: print the defaults")
    config.set_defaults(handler=command_config)

    commands.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint to a quantized GGUF (`zootui convert --help` for its options)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:
        # The converter owns its arguments; importing it only here keeps other commands fast.
        from converters.cli import main as convert_main

        return convert_main(argv[1:], prog="zootui convert")
    parser = build_parser(pull_arguments=argv[:1] == ["pull"])
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        _check_options(args)
        return handler(args)
    except UserError as error:
        print(f"zootui: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`zootui chat ... | head`): nothing left to say.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
