"""Benchmark: zootui's converter against llama.cpp's convert_hf_to_gguf.py on one generated checkpoint.

    python tests/bench/bench_convert.py [--size 1.1b] [--outtypes f16,q8_0] [--llama-cpp-src DIR]
        [--llama-cpp-python PYTHON] [--workdir DIR] [--repeat N]

Writes a LLaMA-shaped fp16 checkpoint (random weights, two safetensors shards with an index, a real
SentencePiece tokenizer from the test fixtures), then runs each converter as a child process and
reports wall time, throughput (checkpoint bytes per second) and peak resident memory (the child's
ru_maxrss). The page cache is warmed before every run so both read from memory, not from the disk.

llama.cpp's converter is the one vendored in the llama-cpp-python source distribution (pass its
unpacked root with --llama-cpp-src); it needs torch, sentencepiece and its vendored gguf-py, for
this comparison only (--llama-cpp-python names an interpreter that has them). Without
--llama-cpp-src only zootui is measured; with it, each type ends with the ratios of the two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_SOURCE = REPO / "tests" / "fixtures" / "tiny" / "llama"

# name -> (hidden, layers, heads, kv heads, intermediate, vocab); 1.1b is TinyLlama's shape (2.2 GB in fp16),
# 7b LLaMA-7B's (13.5 GB).
SHAPES = {
    "tiny": (256, 2, 4, 4, 512, 32000),
    "100m": (768, 8, 12, 12, 2048, 32000),
    "400m": (1024, 20, 16, 8, 4096, 32000),
    "1.1b": (2048, 22, 32, 4, 5632, 32000),
    "7b": (4096, 32, 32, 32, 11008, 32000),
}
_SLICE_VALUES = 8 * 2**20
_POOL_VALUES = 4 * _SLICE_VALUES


def llama_tensor_shapes(
    hidden: int, layers: int, heads: int, kv_heads: int, ff: int, vocab: int
) -> dict[str, tuple[int, ...]]:
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hidden,),
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (kv, hidden),
                p + "self_attn.v_proj.weight": (kv, hidden),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "post_attention_layernorm.weight": (hidden,),
                p + "mlp.gate_proj.weight": (ff, hidden),
                p + "mlp.up_proj.weight": (ff, hidden),
                p + "mlp.down_proj.weight": (hidden, ff),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def _write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> int:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        # Slices of one pool of random values at random offsets: drawing every weight anew would make
        # writing a 7B checkpoint take minutes, and a converter's speed does not depend on the values.
        pool = (rng.standard_normal(_POOL_VALUES, dtype=np.float32) * 0.02).astype(np.float16)
        for shape in shapes.values():
            remaining = math.prod(shape)
            while remaining:  # stream in slices: the generator never holds a whole tensor
                n = min(remaining, _SLICE_VALUES)
                start = int(rng.integers(0, pool.size - n + 1))
                f.write(pool[start : start + n].tobytes())
                remaining -= n
    return offset


def write_llama_checkpoint(directory: Path, shape: str, seed: int = 0) -> int:
    """Writes a LLaMA-shaped fp16 checkpoint in two shards; returns its weight bytes."""
    hidden, layers, heads, kv_heads, ff, vocab = SHAPES[shape]
    directory.mkdir(parents=True, exist_ok=True)
    shapes = llama_tensor_shapes(hidden, layers, heads, kv_heads, ff, vocab)
    names = list(shapes)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    rng = np.random.default_rng(seed)
    total = sum(_write_safetensors(directory / f, {n: shapes[n] for n in ns}, rng) for f, ns in shards.items())
    weight_map = {n: f for f, ns in shards.items() for n in ns}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": ff,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_SOURCE / name, directory / name)
    return total


def _warm_page_cache(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            while f.read(16 * 2**20):
                pass


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (user + system) of one child process.

    CPU seconds matter on a shared machine: other processes stretch the wall time of both
    converters, by different amounts when one of them uses more threads.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{command[:3]} failed with {proc.returncode}:\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def zootui_command(src: Path, out: Path, outtype: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return [sys.executable, "-m", "converters", str(src), "--outtype", outtype, "-o", str(out)], env


def llama_cpp_command(
    llama_src: Path, python: str, src: Path, out: Path, outtype: str
) -> tuple[list[str], dict[str, str]]:
    tree = llama_src / "vendor" / "llama.cpp"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # it puts its own gguf-py first
    return [
        python,
        str(tree / "convert_hf_to_gguf.py"),
        str(src),
        "--outtype",
        outtype,
        "--outfile",
        str(out),
    ], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SHAPES, default="1.1b")
    parser.add_argument("--outtypes", default="f16,q8_0")
    parser.add_argument(
        "--llama-cpp-src", type=Path, help="unpacked llama-cpp-python sdist root (has vendor/llama.cpp)"
    )
    parser.add_argument(
        "--llama-cpp-python",
        default=sys.executable,
        metavar="PYTHON",
        help="interpreter for llama.cpp's converter, with torch installed (default: this one)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where to put the checkpoint and outputs (default: a temporary directory)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per converter and type; the fastest is reported")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zootui-bench-"))
    src = workdir / f"llama-{args.size}"
    if not (src / "config.json").is_file():
        print(f"writing {args.size} checkpoint to {src} …", flush=True)
        write_llama_checkpoint(src, args.size)
    size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    print(f"checkpoint: {size / 1e9:.2f} GB of fp16 weights ({args.size})")
    converters = {"zootui": zootui_command}
    if args.llama_cpp_src:
        converters["convert_hf_to_gguf.py"] = lambda s, o, t: llama_cpp_command(
            args.llama_cpp_src, args.llama_cpp_python, s, o, t
        )

    rows = []
    for outtype in args.outtypes.split(","):
        for label, make in converters.items():
            best = None
            for _ in range(args.repeat):
                out = workdir / f"out-{label}-{outtype}.gguf"
                _warm_page_cache(src)
                run = measure(*make(src, out, outtype))
                out.unlink()
                best = min(best or run, run)
            seconds, rss, cpu = best
            rows.append(
                {
                    "converter": label,
                    "outtype": outtype,
                    "seconds": round(seconds, 2),
                    "mb_per_s": round(size / 1e6 / seconds, 1),
                    "cpu_seconds": round(cpu, 2),
                    "mb_per_cpu_s": round(size / 1e6 / cpu, 1),
                    "peak_rss_mb": round(rss / 1e6, 1),
                }
            )
            print(
                f"{label:<24} {outtype:<6} {seconds:7.2f} s {size / 1e6 / seconds:8.1f} MB/s  "
                f"CPU {cpu:7.2f} s {size / 1e6 / cpu:8.1f} MB/CPU-s  peak RSS {rss / 1e6:8.1f} MB",
                flush=True,
            )
    for outtype in args.outtypes.split(","):
        ours, theirs = (
            next((r for r in rows if r["outtype"] == outtype and r["converter"] == c), None) for c in converters
        )
        if ours and theirs:
            print(
                f"{outtype}: zootui / convert_hf_to_gguf.py: {ours['mb_per_s'] / theirs['mb_per_s']:.2f}x the throughput, "
                f"{ours['mb_per_cpu_s'] / theirs['mb_per_cpu_s']:.2f}x per CPU second, "
                f"at {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x the peak RSS"
            )
    (workdir / "results.json").write_text(
        json.dumps({"checkpoint_bytes": size, "shape": args.size, "runs": rows}, indent=2)
    )
    print(f"results: {workdir / 'results.json'}")


if __name__ == "__main__":
    main()
