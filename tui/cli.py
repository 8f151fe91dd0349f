"""Command line: `zootui` opens the app; subcommands work headless, for scripts and SSH.

Only the bare `zootui` imports Textual. Every other path imports what it
needs inside its handler, so `zootui --version` and `zootui chat` start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from tui import __version__

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Ends the command with its one-line message and exit code 2."""


def _load_settings(args: argparse.Namespace, *, print_warnings: bool = True):
    """The config with command-line overrides, and its warnings (printed to stderr unless asked not to)."""
    from tui.config import load_config, with_overrides
    loaded = load_config()
    if print_warnings:
        for warning in loaded.warnings:
            print(f"zootui: {warning}", file=sys.stderr)
    settings = with_overrides(loaded.settings, "engine", n_ctx=getattr(args, "n_ctx", None),
                              n_threads=getattr(args, "threads", None),
                              n_gpu_layers=getattr(args, "gpu_layers", None))
    return settings, loaded.warnings


def _open_store():
    from tui.store import Store, StoreError
    try:
        return Store.open_default()
    except StoreError as error:
        raise UserError(str(error)) from error


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (override [engine] in the config)")
    group.add_argument("--n-ctx", type=int, metavar="N", help="context length a local model is loaded with")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (0: all)")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers offloaded to the GPU (-1: all)")


def command_tui(args: argparse.Namespace) -> int:
    # Inside the full-screen app, warnings are shown as notifications instead.
    settings, warnings = _load_settings(args, print_warnings=False)
    store = _open_store()
    from tui.app import ZooApp
    ZooApp(settings, store, new_chat_model=args.model, config_warnings=warnings).run()
    return 0


def command_chat(args: argparse.Namespace) -> int:
    import threading

    from tui.chat import ChatService, title_from
    from tui.config import data_dir
    from tui.engine import EngineError, Engines

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
    if args.conversation is not None:
        from tui.store import StoreError
        try:
            conversation = store.conversation(args.conversation)
        except StoreError as error:
            raise UserError(str(error)) from error
        changes = {key: value for key, value in (("model", args.model), ("system_prompt", args.system)) if value}
        if changes:
            conversation = store.update_conversation(conversation.id, **changes)
    else:
        conversation = service.new_conversation(model=args.model, system_prompt=args.system,
                                                title=title_from(prompt))
    overrides = {key: value for key, value in (
        ("max_tokens", args.max_tokens), ("temperature", args.temperature), ("seed", args.seed),
        ("top_p", args.top_p), ("top_k", args.top_k), ("repeat_penalty", args.repeat_penalty),
        ("n_ctx", args.n_ctx)) if value is not None}
    if overrides:
        conversation = store.update_conversation(conversation.id,
                                                 params={**service.params(conversation).to_dict(), **overrides})
    service.add_user_message(conversation, prompt)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        reply = service.reply(conversation, threading.Event(), write)
    except EngineError as error:
        raise UserError(str(error)) from error
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
    from tui.zoo.library import library_models
    models = library_models(data_dir())
    if args.json:
        print(json.dumps([{"name": m.name, "path": str(m.path), "size_bytes": m.size_bytes,
                           "description": m.description} for m in models], indent=2))
        return 0
    if not models:
        print("No models yet: the default model's package is missing; reinstall zootui.")
        return 0
    width = max(len(m.name) for m in models)
    for model in models:
        print(f"{model.name:<{width}}  {model.size_bytes / 1e6:8.1f} MB  {model.description}")
    print("\nAlso: any path to a .gguf file, or remote:NAME for a model on the [remote] server.")
    return 0


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
    text = export(conversation, store.messages(conversation.id), args.format)
    if args.output:
        from tui.files import write_atomically
        write_atomically(Path(args.output), text)
        print(f"Wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zootui", description="Browse, convert and chat with the 2023 zoo of open chat models. "
                                   "With no command, opens the full-screen app.")
    parser.add_argument("--version", action="version", version=f"zootui {__version__}")
    parser.add_argument("-m", "--model", help="model for new conversations (a library name, a .gguf path, "
                                              "or remote:NAME)")
    _add_engine_options(parser)
    parser.set_defaults(handler=command_tui)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    chat = commands.add_parser("chat", help="send one message and stream the reply to stdout",
                               description="Send PROMPT (or standard input) and stream the reply to stdout. "
                                           "The exchange is saved like any conversation.")
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="the message; read from stdin when left out")
    chat.add_argument("-m", "--model", help="a library name, a .gguf path, or remote:NAME")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
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

    models = commands.add_parser("models", help="list the models you can chat with")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(handler=command_models)

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
    export.set_defaults(handler=command_export)

    config = commands.add_parser("config", help="where the config file is, and what it says")
    config.add_argument("action", choices=("path", "show"), help="path: print its location; show: print "
                                                                  "the settings in effect, documented")
    config.add_argument("--defaults", action="store_true", help="with show: print the defaults")
    config.set_defaults(handler=command_config)

    commands.add_parser("convert", help="convert a Hugging Face checkpoint to a quantized GGUF "
                                        "(`zootui convert --help` for its options)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:
        # The converter owns its arguments; importing it only here keeps other commands fast.
        from converters.cli import main as convert_main
        return convert_main(argv[1:], prog="zootui convert")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
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
