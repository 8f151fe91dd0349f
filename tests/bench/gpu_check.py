"""GPU check: mixed CPU/GPU offload through zootui, against a bare llama-cpp-python loop.

    python tests/bench/gpu_check.py [--size 7b] [--quant q4_k_m] [--prompt-tokens 512] [--decode-tokens 128]
        [--threads N] [--repeat 2] [--workdir DIR] [--json FILE]

1. Writes a LLaMA-shaped checkpoint of --size with random weights and converts it with zootui's own
   converter to --quant.
2. Asks zootui's fit for the free VRAM and the n_gpu_layers it suggests, loads the model through
   zootui's engine with that suggestion, and checks the load works and leaves no large share of the
   VRAM unused while layers stay on the CPU.
3. At 0 layers, half the layers, the suggestion and all layers (-1), measures prompt and decode
   tokens/s through zootui's engine and through a bare llama-cpp-python loop with the same settings,
   and prints them side by side with their ratios, and decode as a share of the GPU's memory
   bandwidth limit (bytes read per token × tokens/s ÷ bandwidth, the bandwidth looked up from the
   device name).

Without a GPU (or with a CPU-only build of llama-cpp-python) it runs the 0-layer column and says the
rest needs a GPU; the test suite runs it that way on a tiny model. Timings on a shared machine are
noisy: read the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convert import SHAPES, write_llama_checkpoint  # noqa: E402

from tui.config import Settings, with_overrides  # noqa: E402

# Peak memory bandwidth (GB/s) from the vendors' data sheets, by a substring of the device name as
# nvidia-smi prints it; the first match wins, so the more specific names come first.
BANDWIDTH_GB_S = (
    ("GH200", 4000),  # before H200, which its name contains
    ("H200", 4800),
    ("H100 NVL", 3900),
    ("H100 PCIe", 2000),
    ("H100", 3350),  # SXM5
    ("A100-SXM4-80GB", 2039),
    ("A100 80GB PCIe", 1935),
    ("A100", 1555),  # 40 GB
    ("L40S", 864),
    ("L40", 864),
    ("L4", 300),
    ("A10G", 600),
    ("A10", 600),
    ("V100", 900),
    ("T4", 320),
    ("RTX 4090", 1008),
    ("RTX 3090", 936),
)
SENTENCE = "The keepers feed the pandas bamboo at nine, then walk past the elephants to the river. "


@dataclass
class Rates:
    prompt_tokens: int
    prompt_tok_s: float
    decode_tokens: int
    decode_tok_s: float


@dataclass
class Column:
    n_gpu_layers: int
    label: str
    zootui: Rates
    bare: Rates
    decode_share_of_bandwidth: float | None


def bandwidth_for(name: str) -> int | None:
    return next((gb_s for key, gb_s in BANDWIDTH_GB_S if key in name), None)


def make_model(workdir: Path, size: str, quant: str) -> tuple[Path, float]:
    from converters import convert

    checkpoint = workdir / f"llama-{size}"
    if not (checkpoint / "config.json").is_file():
        write_llama_checkpoint(checkpoint, size)
    started = time.perf_counter()
    gguf = convert(checkpoint, workdir / f"llama-{size}-{quant}.gguf", outtype=quant)
    return gguf, time.perf_counter() - started


def bytes_read_per_token(path: Path) -> int:
    """Every weight is read once per decoded token, except the token embeddings: one row each."""
    from tui.zoo.gguf_header import read_header

    return sum(t.n_bytes for t in read_header(path).tensors if t.name != "token_embd.weight")


def prompt_text(path: Path, tokens: int) -> str:
    """Text of about ``tokens`` tokens in the model's own tokenizer."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    text = SENTENCE
    while len(vocab.tokenize(text.encode(), add_bos=False)) < tokens:
        text += SENTENCE
    vocab.close()
    return text


def through_zootui(path: Path, settings: Settings, text: str, decode: int, repeat: int) -> Rates:
    from tui.engine import Engines, ReplyStats, SamplingParams

    engines = Engines(settings, Path(tempfile.mkdtemp(prefix="gpu-check-")))
    try:
        engine = engines.for_model(str(path))
        params = SamplingParams(temperature=0.0, max_tokens=decode, n_ctx=settings.engine.n_ctx, repeat_penalty=1.0)
        best = None
        for run in range(repeat):
            # Each run opens with other words, so the engine cannot reuse the last run's evaluated prompt.
            messages = [{"role": "user", "content": f"Run {run}. {text}"}]
            stats = next(e for e in engine.stream(messages, params, threading.Event()) if isinstance(e, ReplyStats))
            rates = Rates(
                stats.prompt_tokens_evaluated,
                stats.prompt_tokens_evaluated / stats.seconds_to_first_token,
                stats.completion_tokens,
                stats.tokens_per_second,
            )
            best = rates if best is None else _best(best, rates)
        return best
    finally:
        engines.close()


def bare_loop(path: Path, settings: Settings, text: str, decode: int, repeat: int) -> Rates:
    """llama-cpp-python's own generate loop with the engine's load settings and the same prompt."""
    import llama_cpp

    from tui.engine.threads import thread_plan

    engine = settings.engine
    threads = thread_plan(engine.n_threads, engine.n_threads_batch)
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=engine.n_ctx,
        n_batch=min(engine.n_batch, engine.n_ctx),
        n_threads=threads.decode,
        n_threads_batch=threads.batch,
        n_gpu_layers=engine.n_gpu_layers,
        flash_attn=engine.flash_attn,
        verbose=False,
    )
    try:
        best = None
        for run in range(repeat):
            chatml = f"<|im_start|>user\nRun {run}. {text}<|im_end|>\n<|im_start|>assistant\n"
            tokens = llm.tokenize(chatml.encode(), add_bos=True, special=True)
            llm.reset()  # evaluate the whole prompt, as the engine does for a new conversation
            started = time.perf_counter()
            first = last = None
            count = 0
            for _ in llm.generate(tokens, temp=0.0, repeat_penalty=1.0):
                last = time.perf_counter()
                first = first or last
                count += 1
                if count >= decode:
                    break
            rates = Rates(len(tokens), len(tokens) / (first - started), count, (count - 1) / (last - first))
            best = rates if best is None else _best(best, rates)
        return best
    finally:
        llm.close()


def _best(a: Rates, b: Rates) -> Rates:
    return Rates(
        max(a.prompt_tokens, b.prompt_tokens),
        max(a.prompt_tok_s, b.prompt_tok_s),
        max(a.decode_tokens, b.decode_tokens),
        max(a.decode_tok_s, b.decode_tok_s),
    )


def check_suggestion(path: Path, settings: Settings, text: str, estimate, block_bytes: int) -> tuple[bool, str]:
    """Load with the suggested layers; the load must work, and VRAM left free must not hold another layer."""
    from tui.engine import EngineError, Engines, SamplingParams
    from tui.zoo.fit import GPU_RESERVE_BYTES, free_vram

    loaded = with_overrides(settings, "engine", n_gpu_layers=estimate.gpu_layers)
    engines = Engines(loaded, Path(tempfile.mkdtemp(prefix="gpu-check-")))
    try:
        engine = engines.for_model(str(path))
        params = SamplingParams(temperature=0.0, max_tokens=4, n_ctx=settings.engine.n_ctx)
        for _ in engine.stream([{"role": "user", "content": text}], params, threading.Event()):
            pass
        left = free_vram()
    except EngineError as error:
        return False, f"loading with n_gpu_layers={estimate.gpu_layers} failed: {error}"
    finally:
        engines.close()
    if left is None:
        return False, "nvidia-smi stopped answering after the load"
    all_on_gpu = estimate.gpu_layers >= estimate.offloadable_layers
    slack = left - GPU_RESERVE_BYTES
    if not all_on_gpu and slack > 2 * block_bytes:
        return False, (
            f"{slack / 1e9:.1f} GB of VRAM stayed free with {estimate.offloadable_layers - estimate.gpu_layers} "
            "layers on the CPU: the suggestion is too cautious"
        )
    where = "every layer on the GPU" if all_on_gpu else f"{slack / 1e9:.1f} GB spare, under two layers"
    return True, f"loads with n_gpu_layers={estimate.gpu_layers}; {left / 1e9:.1f} GB VRAM left free ({where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SHAPES, default="7b", help="LLaMA shape of the random model (default 7b)")
    parser.add_argument("--quant", default="q4_k_m", help="weight type the converter writes (default q4_k_m)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for decoding (default: zootui's choice)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the fastest is reported")
    parser.add_argument("--workdir", type=Path, help="checkpoint and GGUF go here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    import llama_cpp

    from tui.zoo.fit import fit_gguf, free_resources, gpu_names

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zootui-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = gpu_names()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    no_gpu = None
    if not offload:
        no_gpu = "this llama-cpp-python is built for the CPU only (install the CUDA build: README, GPU)"
    elif not names:
        no_gpu = "no NVIDIA GPU answers nvidia-smi"
    device = ", ".join(names) if names else "no GPU"
    bandwidth = bandwidth_for(names[0]) if names and no_gpu is None else None
    print(f"device: {device}; llama-cpp-python {llama_cpp.__version__}, GPU offload {'on' if offload else 'off'}")
    if names and no_gpu is None:
        source = f"{bandwidth} GB/s, {names[0]}'s data-sheet figure" if bandwidth else "unknown for this device name"
        print(f"memory bandwidth: {source}")

    print(f"model: {args.size}-shaped LLaMA, random weights, converted by zootui to {args.quant} …", flush=True)
    path, convert_seconds = make_model(workdir, args.size, args.quant)
    per_token = bytes_read_per_token(path)
    n_ctx = args.prompt_tokens + args.decode_tokens + 128
    estimate = fit_gguf(path, n_ctx=n_ctx, free=free_resources(workdir))
    print(
        f"model: {path.stat().st_size / 1e9:.2f} GB ({per_token / 1e9:.2f} GB read per token), "
        f"{estimate.offloadable_layers} offloadable layers; converted in {convert_seconds:.1f} s"
    )
    vram = "none" if estimate.free.vram_bytes is None else f"{estimate.free.vram_bytes / 1e9:.1f} GB free"
    print(f"fit: VRAM {vram}; suggested n_gpu_layers {estimate.gpu_layers} of {estimate.offloadable_layers}")

    settings = with_overrides(Settings(), "engine", n_ctx=n_ctx, n_threads=args.threads)
    text = prompt_text(path, args.prompt_tokens)
    suggestion = {"ok": None, "detail": "needs a GPU"}
    layer_counts = [(0, "0 (CPU)")]
    if no_gpu is None:
        ok, detail = check_suggestion(path, settings, text, estimate, max(estimate.weights.block_bytes))
        suggestion = {"ok": ok, "detail": detail}
        print(f"suggestion: {'ok' if ok else 'FAILED'}: {detail}")
        half = estimate.offloadable_layers // 2
        layer_counts += [(half, f"{half} (half)"), (estimate.gpu_layers, f"{estimate.gpu_layers} (suggested)")]
        layer_counts.append((-1, f"all ({estimate.offloadable_layers}, -1)"))

    columns = []
    for layers, label in layer_counts:
        chosen = with_overrides(settings, "engine", n_gpu_layers=layers)
        ours = through_zootui(path, chosen, text, args.decode_tokens, args.repeat)
        theirs = bare_loop(path, chosen, text, args.decode_tokens, args.repeat)
        share = None if bandwidth is None or layers == 0 else ours.decode_tok_s * per_token / (bandwidth * 1e9)
        columns.append(Column(layers, label, ours, theirs, share))
        print(f"  measured n_gpu_layers={label}", flush=True)

    print_table(columns)
    if no_gpu is not None:
        print(f"\nHalf, suggested and all layers need a GPU: {no_gpu}.")
    if args.json:
        report = {
            "device": device,
            "gpu_offload": offload,
            "no_gpu": no_gpu,
            "bandwidth_gb_s": bandwidth,
            "size": args.size,
            "quant": args.quant,
            "model_bytes": path.stat().st_size,
            "bytes_read_per_token": per_token,
            "offloadable_layers": estimate.offloadable_layers,
            "free_vram_bytes": estimate.free.vram_bytes,
            "suggested_gpu_layers": estimate.gpu_layers,
            "suggestion": suggestion,
            "columns": [asdict(c) for c in columns],
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if suggestion["ok"] in (None, True) else 1


def print_table(columns: list[Column]) -> None:
    head = (
        "| n_gpu_layers | prompt tok/s zootui | prompt tok/s llama-cpp-python | ratio "
        "| decode tok/s zootui | decode tok/s llama-cpp-python | ratio | decode / bandwidth limit |"
    )
    print("\n" + head)
    print("|---" * (head.count("|") - 1) + "|")
    for c in columns:
        if c.n_gpu_layers == 0:
            share = "n/a (CPU)"
        else:
            share = "unknown" if c.decode_share_of_bandwidth is None else f"{c.decode_share_of_bandwidth:.0%}"
        print(
            f"| {c.label} | {c.zootui.prompt_tok_s:.1f} | {c.bare.prompt_tok_s:.1f} "
            f"| {c.zootui.prompt_tok_s / c.bare.prompt_tok_s:.2f} | {c.zootui.decode_tok_s:.1f} "
            f"| {c.bare.decode_tok_s:.1f} | {c.zootui.decode_tok_s / c.bare.decode_tok_s:.2f} | {share} |"
        )


if __name__ == "__main__":
    sys.exit(main())
