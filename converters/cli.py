"""`zootui convert` and `python -m converters`: one implementation for both."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from .chatglm_cpp import CHATGLM_CPP_OUTTYPES, convert_chatglm, is_glm_v1
from .chatglm_cpp import DEFAULT_OUTTYPE as CHATGLM_CPP_DEFAULT_OUTTYPE
from .chatglm_cpp_file import CHATGLM_CPP_SUFFIX
from .checkpoint import read_config
from .convert import OUTTYPES, convert
from .errors import ConversionCancelled, ConversionError
from .exit_codes import EXIT_INTERRUPTED, EXIT_USER_ERROR
from .progress import ConsoleProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src_dir",
        metavar="SRC_DIR",
        type=Path,
        help="Hugging Face checkpoint directory (config.json + weights + tokenizer)",
    )
    parser.add_argument(
        "--outtype",
        type=str.lower,
        metavar="TYPE",
        help=f"output type: {', '.join(OUTTYPES)} (default: q4_k_m); for ChatGLM-6B v1, which becomes"
        f" chatglm.cpp's model file, {', '.join(CHATGLM_CPP_OUTTYPES)} (default: {CHATGLM_CPP_DEFAULT_OUTTYPE})",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT.gguf",
        help=f"output file (default: ./<SRC_DIR name>-<TYPE>.gguf, or {CHATGLM_CPP_SUFFIX} for ChatGLM-6B v1)",
    )
    parser.add_argument(
        "--chat-template", type=Path, metavar="FILE", help="Jinja chat template to embed as tokenizer.chat_template"
    )
    parser.add_argument(
        "--eos-token",
        metavar="TEXT",
        help='end-of-sequence token by its text, overriding the tokenizer\'s (e.g. "### End" for Dolly v2)',
    )
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="a string that ends a reply (repeatable), stored for zootui's chat engine",
    )
    parser.add_argument("--repo", metavar="ORG/NAME", help="source repository recorded in the GGUF metadata")
    parser.add_argument("--revision", metavar="REV", help="source revision recorded in the GGUF metadata")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="converter and quantizer threads (default: all usable cores)"
    )


def run(args: argparse.Namespace) -> int:
    prefix = getattr(args, "prog", "converters")
    provenance = {key: value for key, value in (("repo", args.repo), ("revision", args.revision)) if value}
    cancel = threading.Event()
    try:
        template = args.chat_template.read_text(encoding="utf-8") if args.chat_template else None
        glm_v1 = is_glm_v1(read_config(args.src_dir))  # llama.cpp has no graph for it; chatglm.cpp has
        outtype = args.outtype or (CHATGLM_CPP_DEFAULT_OUTTYPE if glm_v1 else "q4_k_m")
        suffix = CHATGLM_CPP_SUFFIX if glm_v1 else ".gguf"
        output = args.output or Path.cwd() / f"{args.src_dir.resolve().name}-{outtype}{suffix}"
        if glm_v1:
            path = convert_chatglm(args.src_dir, output, outtype, progress=ConsoleProgress(), cancel=cancel)
        else:
            path = convert(
                args.src_dir,
                output,
                outtype=outtype,
                chat_template=template,
                provenance=provenance,
                progress=ConsoleProgress(),
                cancel=cancel,
                eos_token=args.eos_token,
                nthreads=args.threads,
                stop_strings=args.stop,
            )
    except OSError as exc:
        print(f"{prefix}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USER_ERROR
    except ConversionCancelled as exc:
        print(f"{prefix}: cancelled: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConversionError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        cancel.set()
        print(f"{prefix}: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(path.resolve())
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m converters") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Convert a Hugging Face checkpoint to GGUF for llama.cpp.")
    add_arguments(parser)
    parser.set_defaults(prog=prog)
    return run(parser.parse_args(argv))
