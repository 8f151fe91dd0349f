"""`zootui serve [--host 127.0.0.1] [--port 8000] [--model NAME ...]`: arguments in, the server up.

It listens on 127.0.0.1 unless told otherwise. Any address beyond this machine needs an API key, from
the environment variable ZOOTUI_SERVE_API_KEY (never from the config file or the command line, where
other users could read it); when set, every request must send it, on loopback too.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import socket
import sys
from pathlib import Path

API_KEY_ENV = "ZOOTUI_SERVE_API_KEY"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
INSTALL_HINT = "pip install 'zootui[serve]'"
WEB_STACK = ("starlette", "uvicorn", "sse_starlette")


class ServeError(Exception):
    """The server cannot start as asked; one line saying what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}, this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="serve this library model (repeat for more; default: every model in `zootui models`)",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def served_models(names: list[str] | None, data_dir: Path) -> dict[str, float]:
    """The library models to serve, with the time each file was made. chatglm.cpp's models are left out:
    the server completes text and keeps every message as llama.cpp's engines do, which ChatGLMEngine does not."""
    from tui.zoo.library import CHATGLM_CPP_SUFFIX, library_models

    local = [model for model in library_models(data_dir) if model.path is not None]
    glm = [model.name for model in local if model.path.suffix == CHATGLM_CPP_SUFFIX]
    library = {model.name: model for model in local if model.name not in glm}
    named_glm = [name for name in names or [] if name in glm]
    if named_glm:
        raise ServeError(
            f"{', '.join(map(repr, named_glm))} runs on chatglm.cpp, and `zootui serve` runs llama.cpp models only; "
            "chat with it in the app instead."
        )
    unknown = [name for name in names or [] if name not in library]
    if unknown:
        raise ServeError(
            f"no library model named {', '.join(map(repr, unknown))}; `zootui models` lists the ones to serve."
        )
    chosen = names or list(library)
    if not chosen:
        raise ServeError("the library has no models to serve; `zootui pull` gets one.")
    return {name: library[name].path.stat().st_mtime for name in dict.fromkeys(chosen)}


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that a taken port is one clear line, not a server's log."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        raise ServeError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); is another server using it? --port picks another."
        ) from error
    return sock


def run(args: argparse.Namespace, settings) -> int:
    missing = [module for module in WEB_STACK if importlib.util.find_spec(module) is None]
    if missing:
        raise ServeError(f"`zootui serve` needs its web server ({', '.join(missing)} missing): {INSTALL_HINT}")
    if not 0 < args.port < 65536:
        raise ServeError(f"--port must be from 1 to 65535, not {args.port}.")
    api_key = os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(args.host):
        raise ServeError(
            f"listening on {args.host} lets other machines in: set {API_KEY_ENV} to the key clients must send "
            f"(Authorization: Bearer KEY), or keep the default --host {DEFAULT_HOST}."
        )
    from tui.chat import default_params
    from tui.config import data_dir

    models = served_models(args.models, data_dir())
    sock = listen(args.host, args.port)

    import uvicorn

    from tui.engine import Engines
    from tui.serve.app import Server

    server = Server(Engines(settings, data_dir()), models, default_params(settings), settings.engine.n_ctx)
    host = f"[{args.host}]" if ":" in args.host else args.host
    key_note = f"clients must send ${API_KEY_ENV}" if api_key else "no API key"
    print(
        f"zootui serve: {', '.join(models)} at http://{host}:{args.port}/v1 (OpenAI-compatible; {key_note}); ctrl+c stops.",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(server.asgi(api_key), log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
