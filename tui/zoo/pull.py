"""`zootui pull`: get a catalog model, or import a local GGUF or checkpoint directory, into the library.

The job is ``tui.zoo.jobs``'s, the same the model browser runs; this module only turns arguments
into a call and its progress into console output (a redrawn bar on a terminal, lines otherwise).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from converters import EXIT_INTERRUPTED, EXIT_USER_ERROR, OUTTYPES, ConsoleProgress, Progress
from tui.zoo.jobs import DEFAULT_QUANT, JobCancelled, JobError, JobProgress, Jobs, LoraMode, RegisteredModel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "variant",
        nargs="?",
        metavar="ID",
        help="catalog variant id (`zootui models --all` lists them); run again to resume",
    )
    parser.add_argument(
        "--quant",
        default=DEFAULT_QUANT,
        type=str.lower,
        metavar="TYPE",
        help=f"output type: {', '.join(OUTTYPES)} (default: {DEFAULT_QUANT})",
    )
    parser.add_argument(
        "--import",
        dest="import_path",
        type=Path,
        metavar="PATH",
        help="import a local .gguf file or Hugging Face checkpoint directory instead",
    )
    parser.add_argument(
        "--lora",
        choices=[mode.value for mode in LoraMode],
        default=LoraMode.MERGE.value,
        help="for a LoRA variant: merge the adapter into the weights (default), or keep it as a "
        "GGUF LoRA beside the base that llama.cpp applies at run time",
    )
    parser.add_argument(
        "--base",
        type=Path,
        metavar="PATH",
        help="your copy of the base model the variant is rebuilt from (instead of downloading it)",
    )
    parser.add_argument(
        "--name", metavar="NAME", help="with --import: library name (default: the file or directory name)"
    )
    parser.add_argument(
        "--prompt-format",
        metavar="FAMILY",
        help="with --import of a checkpoint: the family's chat template to embed (see `zootui prompt`)",
    )


class _JobConsole:
    """Feeds job reports to converters' console progress, one bar (or line run) per step."""

    def __init__(self) -> None:
        self.console = ConsoleProgress()

    def __call__(self, report: JobProgress) -> None:
        if not report.bytes_total:  # a step starting, or one without a measure: its first measured report shows it
            return
        stage = f"[{report.index}/{report.total}] {report.step}"
        self.console(Progress(report.bytes_done, report.bytes_total, report.detail, stage))


def run(args: argparse.Namespace) -> int:
    from tui.config import data_dir
    from tui.store import Store, StoreError
    from tui.zoo.catalog import CatalogError

    if (args.variant is None) == (args.import_path is None):
        return _fail("give a catalog variant ID or --import PATH (one of them)")
    if args.variant is not None and (args.name or args.prompt_format):
        return _fail("--name and --prompt-format go with --import; a catalog variant has its own")
    if args.import_path is not None and args.base:
        return _fail("--base goes with a catalog variant ID, which is rebuilt from a base model")
    if args.import_path is not None and args.lora != LoraMode.MERGE:
        return _fail("--lora goes with a catalog variant ID released as a LoRA adapter")
    cancel = threading.Event()
    try:
        jobs = Jobs(Store.open_default(), data_dir())
        model = _pull(jobs, args, _JobConsole(), cancel)
    except JobCancelled as error:
        print(f"zootui: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (JobError, StoreError, CatalogError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        cancel.set()
        print("zootui: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    smoke = model.lockfile.smoke_test
    if smoke is not None:
        print(f"zootui: smoke test passed at {smoke['tokens_per_s']} tokens/s: {smoke['text']!r}", file=sys.stderr)
    print(f"zootui: {model.path}; chat with `zootui chat -m {model.name}`", file=sys.stderr)
    print(model.name)
    return 0


def _pull(jobs: Jobs, args: argparse.Namespace, progress: _JobConsole, cancel: threading.Event) -> RegisteredModel:
    if args.variant is not None:
        return jobs.get_model(
            args.variant, args.quant, lora=args.lora, base=args.base, progress=progress, cancel=cancel
        )
    return jobs.import_path(
        args.import_path,
        args.quant,
        name=args.name,
        prompt_format_name=args.prompt_format,
        progress=progress,
        cancel=cancel,
    )


def _fail(message: str) -> int:
    print(f"zootui: {message}", file=sys.stderr)
    return EXIT_USER_ERROR
