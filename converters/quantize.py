"""llama.cpp's quantizer (`llama_model_quantize`), run in a child process.

The call blocks and has neither a progress callback nor a cancel switch, so it runs in a subprocess:
the parent kills it to cancel, survives its crashes, and turns the per-tensor lines llama.cpp logs
("[  3/ 20] blk.0.attn_q.weight - …") into Progress reports.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from .errors import ConversionCancelled, ConversionError
from .files import written_atomically
from .progress import Progress, ProgressCallback

# name -> (llama ftype, approximate bits per weight, used to estimate the output size).
# Only types that need no importance matrix; llama.cpp's ftype numbers from llama.h.
QUANT_SPECS: dict[str, tuple[int, float]] = {
    "q4_0": (2, 4.5),
    "q4_1": (3, 5.0),
    "q8_0": (7, 8.5),
    "q5_0": (8, 5.5),
    "q5_1": (9, 6.0),
    "q2_k": (10, 3.0),
    "q3_k_s": (11, 3.5),
    "q3_k_m": (12, 3.9),
    "q3_k_l": (13, 4.3),
    "q4_k_s": (14, 4.6),
    "q4_k_m": (15, 4.9),
    "q5_k_s": (16, 5.5),
    "q5_k_m": (17, 5.7),
    "q6_k": (18, 6.6),
    "iq3_xs": (22, 3.3),
    "iq4_nl": (25, 4.5),
    "iq3_s": (26, 3.5),
    "iq3_m": (27, 3.7),
    "iq4_xs": (30, 4.3),
}
QUANT_TYPES: dict[str, int] = {name: ftype for name, (ftype, _) in QUANT_SPECS.items()}
# llama.cpp refuses these without an importance matrix, which this app does not compute.
IMATRIX_TYPES = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "q2_k_s")

_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def check_qtype(qtype: str) -> str:
    name = qtype.lower()
    if name in IMATRIX_TYPES:
        raise ConversionError(
            f"{name} needs an importance matrix (imatrix), which zootui does not compute; choose q4_k_m, q5_k_m, q6_k or q8_0"
        )
    if name not in QUANT_TYPES:
        raise ConversionError(f"unknown quantization type {qtype!r}; choose one of {', '.join(QUANT_TYPES)}")
    return name


def _tensor_sizes(gguf_path: Path) -> dict[str, int]:
    import gguf

    try:
        reader = gguf.GGUFReader(gguf_path)
    except (ValueError, OSError) as exc:
        raise ConversionError(
            f"{gguf_path} is not a readable GGUF file ({exc}); convert the checkpoint again"
        ) from None
    return {t.name: int(t.n_bytes) for t in reader.tensors}


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def quantize(
    src_gguf: str | os.PathLike[str],
    out_gguf: str | os.PathLike[str],
    qtype: str,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    nthreads: int | None = None,
) -> Path:
    """Quantizes `src_gguf` (f32/f16/bf16) to `out_gguf`, atomically; returns the output path."""
    name = check_qtype(qtype)
    src, out = Path(src_gguf), Path(out_gguf)
    if not src.is_file():
        raise ConversionError(f"{src} does not exist; convert the checkpoint first")
    sizes = _tensor_sizes(src)
    total = sum(sizes.values())
    with written_atomically(out) as partial:
        _run_quantizer(src, partial, name, sizes, progress, cancel, nthreads)
    if progress is not None:
        progress(Progress(total, total, "", "quantize"))
    return out


def _run_quantizer(
    src: Path,
    partial: Path,
    name: str,
    sizes: dict[str, int],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    nthreads: int | None,
) -> None:
    """Run llama.cpp's quantizer in a child process writing ``partial``, turning its log into progress."""
    total = sum(sizes.values())
    child = "import sys; from converters.quantize import run_child; sys.exit(run_child(*sys.argv[1:]))"
    command = [sys.executable, "-c", child, str(src), str(partial), str(QUANT_TYPES[name]), str(nthreads or 0)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    log: list[str] = []
    done = 0
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise ConversionCancelled()
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            log.append(line.rstrip())
            match = _TENSOR_LINE.search(line)
            if match and "size =" in line:  # the tensor's line is complete once its new size is logged
                done += sizes.get(match.group(3), 0)
                if progress is not None:
                    progress(Progress(done, total, match.group(3), "quantize"))
        if proc.wait() != 0:
            reason = next(
                (entry for entry in reversed(log) if "error" in entry.lower() or "failed" in entry.lower()), None
            )
            if reason and "failed to quantize: " in reason:  # drop the progress fragment the line starts with
                reason = reason.split("failed to quantize: ", 1)[1]
            raise ConversionError(
                f"llama.cpp could not quantize {src.name} to {name}: {reason or (log[-1] if log else f'exit status {proc.returncode}')}"
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_child(src: str, dst: str, ftype: str, nthreads: str) -> int:
    """Runs in the child: quantizes, echoing llama.cpp's log to stdout for the parent to parse."""
    import ctypes

    import llama_cpp

    def echo(level, text, user_data):
        sys.stdout.write(text.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    callback = llama_cpp.llama_log_callback(echo)  # kept referenced for the whole call
    llama_cpp.llama_log_set(callback, ctypes.c_void_p())
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(nthreads)
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
