"""Benchmark: zootui's MiniGPT-4 image encoder on one 224x224 image, with the real ViT-g/14 + Q-Former shape.

    python tests/bench/bench_vision.py [--runs 3] [--workdir DIR] [--torch-python /work/devenv/venv/bin/python]

Writes a vision file of MiniGPT-4 13B's shape with random weights (EVA ViT-g/14: 39 blocks of width
1408, 16 heads, feed-forward 6144; Q-Former: 12 layers of width 768, 32 queries; projection to 5120;
about 2.1 GB of f16), then, each in a child process of its own so that peak memory is its alone:

- zootui: load the file and encode a generated picture (preprocessing included), ``--runs`` times;
  first run (cold: weights read from the page cache into f32 a layer at a time) and the best run;
- numpy BLAS alone: the same matrix products (same shapes, float32) through numpy's BLAS with its own
  threading, nothing else: what a plain numpy port would spend on its products;
- transformers (with ``--torch-python``, a Python that has torch and transformers): ``Blip2VisionModel``
  + ``Blip2QFormerModel`` + a Linear of the same shape in float32, for the same pixels;

Goal (issue 9): under 10 s per image on 2 cores, peak RSS under 3 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# MiniGPT-4 13B's shape. A plain dict: the transformers child runs in a Python without zootui's dependencies.
REAL_SHAPE = {
    "image_size": 224,
    "patch_size": 14,
    "vit_width": 1408,
    "vit_layers": 39,
    "vit_heads": 16,
    "vit_ffn": 6144,
    "qformer_width": 768,
    "qformer_layers": 12,
    "qformer_heads": 12,
    "qformer_ffn": 3072,
    "cross_attention_frequency": 2,
    "query_count": 32,
    "output_width": 5120,
}


def real_shape():
    from converters import VisionShape

    return VisionShape(**REAL_SHAPE)


def write_random_vision_file(path: Path, shape) -> None:
    import gguf

    from converters import VisionShape

    rng = np.random.default_rng(0)
    shapes = shape.tensor_shapes()
    writer = gguf.GGUFWriter(path, VisionShape.ARCH)
    shape.write(writer)
    for name, tensor_shape in shapes.items():
        dtype = VisionShape.stored_dtype(name, tensor_shape)
        writer.add_tensor_info(name, tensor_shape, dtype, math.prod(tensor_shape) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, tensor_shape in shapes.items():
        if name.endswith(("ln1.weight", "ln2.weight", "_ln.weight", "post_ln.weight")):
            values = np.ones(tensor_shape, np.float32)
        else:
            scale = 1 / math.sqrt(tensor_shape[-1]) if len(tensor_shape) >= 2 else 0.02
            values = rng.standard_normal(tensor_shape, dtype=np.float32) * np.float32(scale)
        writer.write_tensor_data(values.astype(VisionShape.stored_dtype(name, tensor_shape)))
    writer.close()


def picture() -> object:
    from PIL import Image

    y, x = np.mgrid[0:300, 0:400]
    rgb = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def run_zootui(path: Path, runs: int) -> dict:
    from tui.vision import VisionEncoder

    started = time.perf_counter()
    encoder = VisionEncoder(path)
    load = time.perf_counter() - started
    image = picture()
    times, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        vectors = encoder.encode(image)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    assert vectors.shape == (32, 5120) and np.isfinite(vectors).all()
    return {"load_s": load, "first_s": times[0], "best_s": min(times), "cpu_s": cpu[times.index(min(times))]}


def run_floor(shape, runs: int) -> dict:
    """The encoder's matrix products alone, on preallocated float32 weights."""
    rng = np.random.default_rng(1)
    n = shape.patches + 1
    w, f, d, g, q = shape.vit_width, shape.vit_ffn, shape.qformer_width, shape.qformer_ffn, shape.query_count
    matrices = {
        s: rng.standard_normal(s, dtype=np.float32)
        for s in {(3 * w, w), (w, w), (f, w), (w, f), (d, d), (d, w), (g, d), (d, g)}
    }
    x, hd = rng.standard_normal((n, w), dtype=np.float32), w // shape.vit_heads
    heads = rng.standard_normal((shape.vit_heads, n, hd), dtype=np.float32)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for _layer in range(shape.vit_layers):
            _ = x @ matrices[(3 * w, w)].T
            scores = heads @ heads.transpose(0, 2, 1)
            _ = scores @ heads
            _ = x @ matrices[(w, w)].T
            up = x @ matrices[(f, w)].T
            _ = up @ matrices[(w, f)].T
        queries = rng.standard_normal((q, d), dtype=np.float32)
        for layer in range(shape.qformer_layers):
            for _ in range(4):
                _ = queries @ matrices[(d, d)].T
            if shape.has_cross_attention(layer):
                _ = x @ matrices[(d, w)].T
                _ = x @ matrices[(d, w)].T
                _ = queries @ matrices[(d, d)].T
                _ = queries @ matrices[(d, d)].T
            up = queries @ matrices[(g, d)].T
            _ = up @ matrices[(d, g)].T
        times.append(time.perf_counter() - started)
    return {"best_s": min(times)}


def run_transformers(shape: dict, runs: int) -> dict:
    import torch
    from transformers import Blip2QFormerConfig, Blip2VisionConfig
    from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2VisionModel

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    vision = Blip2VisionModel(
        Blip2VisionConfig(
            hidden_size=shape["vit_width"],
            intermediate_size=shape["vit_ffn"],
            num_hidden_layers=shape["vit_layers"],
            num_attention_heads=shape["vit_heads"],
            image_size=shape["image_size"],
            patch_size=shape["patch_size"],
        )
    ).eval()
    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=shape["qformer_width"],
            intermediate_size=shape["qformer_ffn"],
            num_hidden_layers=shape["qformer_layers"],
            num_attention_heads=shape["qformer_heads"],
            encoder_hidden_size=shape["vit_width"],
        )
    ).eval()
    projection = torch.nn.Linear(shape["qformer_width"], shape["output_width"])
    query_tokens = torch.zeros(1, shape["query_count"], shape["qformer_width"])
    pixels = torch.randn(1, 3, shape["image_size"], shape["image_size"])
    times = []
    with torch.no_grad():
        for _ in range(runs):
            started = time.perf_counter()
            embeds = vision(pixel_values=pixels).last_hidden_state
            out = qformer(query_embeds=query_tokens, encoder_hidden_states=embeds).last_hidden_state
            projection(out)
            times.append(time.perf_counter() - started)
    return {"first_s": times[0], "best_s": min(times)}


def child(kind: str, path: str, runs: int) -> None:
    result = {
        "zootui": lambda: run_zootui(Path(path), runs),
        "floor": lambda: run_floor(real_shape(), runs),
        "transformers": lambda: run_transformers(REAL_SHAPE, runs),
    }[kind]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(python: str, kind: str, path: Path, runs: int, env: dict[str, str] | None = None) -> dict:
    output = subprocess.run(
        [python, __file__, "--child", kind, str(path), str(runs)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--torch-python", help="a Python with torch and transformers, for the reference run")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        path = Path(workdir) / "vit-g.vision.gguf"
        started = time.perf_counter()
        write_random_vision_file(path, real_shape())
        print(
            f"wrote {path.stat().st_size / 1e9:.2f} GB of random ViT-g weights in {time.perf_counter() - started:.0f} s"
        )
        print(f"cores: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.1f}")
        ours = measure(sys.executable, "zootui", path, args.runs)
        floor = measure(sys.executable, "floor", path, args.runs)
        print(f"{'run':<34} {'first s':>8} {'best s':>8} {'peak RSS MB':>12}")
        print(
            f"{'zootui encoder (load ' + format(ours['load_s'], '.2f') + ' s)':<34} {ours['first_s']:8.2f} {ours['best_s']:8.2f} {ours['peak_rss_mb']:12.0f}"
        )
        print(f"{'numpy BLAS alone, same products':<34} {'':>8} {floor['best_s']:8.2f} {floor['peak_rss_mb']:12.0f}")
        print(f"zootui best run: {ours['cpu_s']:.1f} CPU seconds")
        print(f"ratio zootui best / numpy BLAS alone: {ours['best_s'] / floor['best_s']:.2f}")
        if args.torch_python:
            theirs = measure(args.torch_python, "transformers", path, args.runs)
            print(
                f"{'transformers fp32 (torch)':<34} {theirs['first_s']:8.2f} {theirs['best_s']:8.2f} {theirs['peak_rss_mb']:12.0f}"
            )
            print(f"ratio zootui best / transformers best: {ours['best_s'] / theirs['best_s']:.2f}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
