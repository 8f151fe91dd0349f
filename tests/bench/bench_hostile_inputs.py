"""Benchmark: peak memory and time of the resource attacks from issue 13, against a trusted conversion.

    python tests/bench/bench_hostile_inputs.py [--before DIR] [--workdir DIR] [--memory-cap-gb 6] [--timeout 180]

Builds each hostile input (a config.json with 10**12 layers, a 99 MB safetensors header, a data.pkl
that inflates from a few MB to 1.5 GB, chat templates that loop or build a string of gigabytes, GGUF
metadata nesting 100k arrays, and the largest inputs the new limits still let through), then runs
each in its own child process and reports its outcome, wall time and peak resident memory (the
child's ru_maxrss), with the ratio to a trusted conversion of the tiny LLaMA fixture measured in the
same run. `--before DIR` also runs every case against the code in DIR (a `git archive` of an older
commit), side by side. Children run under an address-space cap (--memory-cap-gb) and a timeout, so
an unbounded case stops there instead of taking the machine: "cap" or "timeout" in the table means
the case would have gone on growing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny"

# Runs `module` (or `-c code`) from the code tree in argv[2], not from the editable install of this venv,
# under an address-space cap of argv[1] bytes.
_BOOT = """
import resource, runpy, sys
cap, root, target, *args = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(f)]
sys.path.insert(0, root)
if target == "-c":
    sys.argv = [target, *args[1:]]
    exec(args[0], {"__name__": "__main__"})
else:
    sys.argv = [target, *args]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""
_RENDER = """
import sys
from tui.zoo.templates import render_template
template = open(sys.argv[1], encoding="utf-8").read()
try:
    print(len(render_template(template, [{"role": "user", "content": "hi"}], "<s>", "</s>")))
except Exception as error:
    print(f"{type(error).__name__}: {error}"[:300], file=sys.stderr)
    sys.exit(2)
"""
_GGUF = """
import sys
from pathlib import Path
from tui.zoo.gguf_header import read_header
try:
    read_header(Path(sys.argv[1]))
except ValueError as error:
    print(f"{type(error).__name__}: {error}"[:300], file=sys.stderr)
    sys.exit(2)
"""


@dataclass
class Outcome:
    exit: str
    seconds: float
    peak_mb: float
    line: str


def run(root: Path, args: list[str], cap_bytes: int, timeout: float) -> Outcome:
    env = {**os.environ, "PYTHONPATH": "", "ZOOTUI_DATA_DIR": str(root / ".bench-data"), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(cap_bytes), str(root), *args],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
        )
        timed_out = False
        while True:  # os.wait4 reaps the child with its own resource usage (ru_maxrss)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                proc.kill()
                timed_out = True
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        errors.seek(0)
        lines = errors.read().decode(errors="replace").strip().splitlines()
    code = os.waitstatus_to_exitcode(status)
    last = lines[-1] if lines else ""
    if timed_out:
        verdict = "timeout"
    elif "MemoryError" in last or code == -9:
        verdict = "cap"
    else:
        verdict = f"exit {code}"
    return Outcome(verdict, seconds, usage.ru_maxrss / 1024, last[:110])


def _checkpoint(work: Path, name: str, variant: str = "llama") -> Path:
    directory = work / name
    shutil.copytree(TINY / variant, directory)
    return directory


def build_cases(work: Path) -> dict[str, list[str]]:
    """name -> the child's arguments after the code root."""
    cases: dict[str, list[str]] = {}
    convert = ["converters", "--outtype", "f16", "-o", str(work / "out.gguf")]

    cases["reference: convert tiny LLaMA (trusted)"] = [*convert[:1], str(TINY / "llama"), *convert[1:]]

    layers = _checkpoint(work, "layers")
    config = json.loads((layers / "config.json").read_text())
    config["num_hidden_layers"] = 10**12
    (layers / "config.json").write_text(json.dumps(config))
    cases["config.json num_hidden_layers = 10**12"] = [*convert[:1], str(layers), *convert[1:]]

    for label, megabytes in (("99 MB", 99), ("15.9 MB (largest accepted now)", 15.9)):
        directory = work / f"header-{megabytes}"
        directory.mkdir()
        (directory / "config.json").write_text('{"architectures": []}')
        entry = '"t%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},'
        count = int(megabytes * 2**20) // len(entry % 10**6)
        header = ("{" + "".join(entry % i for i in range(count)))[:-1] + "}"
        encoded = header.encode().ljust(int(megabytes * 2**20) if megabytes < 16 else len(header))
        (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded)
        cases[f"safetensors header of {label}"] = [*convert[:1], str(directory), *convert[1:]]

    bomb = work / "zipbomb"
    bomb.mkdir()
    (bomb / "config.json").write_text('{"architectures": []}')
    text_bytes = 1_500_000_000
    with zipfile.ZipFile(bomb / "pytorch_model.bin", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as member:
            member.write(b"\x80\x04\x8d" + struct.pack("<Q", text_bytes))
            block = b"a" * 2**24
            for _ in range(text_bytes // len(block)):
                member.write(block)
            member.write(b"a" * (text_bytes % len(block)) + b".")
        archive.writestr("archive/version", "3\n")
    size_mb = (bomb / "pytorch_model.bin").stat().st_size / 1e6
    cases[f"data.pkl {size_mb:.1f} MB inflating to 1.5 GB"] = [*convert[:1], str(bomb), *convert[1:]]

    from converters.unpickle import MAX_PICKLE_BYTES

    worst = work / "pickle-limit"
    worst.mkdir()
    (worst / "config.json").write_text('{"architectures": []}')
    stream = b"\x80\x02]" + b"}a" * ((MAX_PICKLE_BYTES - 4) // 2) + b"."
    with zipfile.ZipFile(worst / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", stream)
    cases["data.pkl of 2 MiB of dicts (the largest accepted now)"] = [*convert[:1], str(worst), *convert[1:]]

    templates = {
        "template: range(100000) twice": "{% for i in range(100000) %}{% for j in range(100000) %}"
        "{{ messages[0]['content'] }}{% endfor %}{% endfor %}",
        "template: string bomb of 5 GB": "{% set s = 'x' * 1000000000 %}{{ s ~ s ~ s ~ s ~ s }}",
    }
    for name, template in templates.items():
        path = work / f"{len(cases)}.jinja"
        path.write_text(template)
        cases[name] = ["-c", _RENDER, str(path)]

    gguf = work / "nested.gguf"
    payload = struct.pack("<IQ", 9, 1) * 99_999 + struct.pack("<IQ", 4, 0)
    gguf.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<I", 9) + payload
    )
    cases["GGUF metadata nesting 100k arrays"] = ["-c", _GGUF, str(gguf)]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="an older code tree to measure side by side")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--memory-cap-gb", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_into:  # in a child: building a 1.5 GB zip must not raise the measuring process's own RSS,
        json.dump(build_cases(args.build_into), sys.stdout)  # which every child it forks would start from
        return
    work = Path(tempfile.mkdtemp(prefix="zootui-hostile-", dir=args.workdir))
    try:
        built = subprocess.run(
            [sys.executable, __file__, "--build-into", str(work)], capture_output=True, text=True, check=True
        )
        cases = json.loads(built.stdout)
        cap = int(args.memory_cap_gb * 2**30)
        roots = {"now": REPO} | ({"before": args.before.resolve()} if args.before else {})
        results = {
            label: {name: run(root, case, cap, args.timeout) for name, case in cases.items()}
            for label, root in roots.items()
        }
        reference = results["now"][next(iter(cases))].peak_mb
        print(f"peak RSS (MB), wall time (s) and outcome; ratio to the trusted conversion's {reference:.0f} MB peak")
        print(f"children capped at {args.memory_cap_gb:g} GB of address space and {args.timeout:g} s\n")
        for name in cases:
            print(name)
            for label, outcomes in results.items():
                o = outcomes[name]
                print(
                    f"  {label:<6} {o.exit:<8} {o.seconds:7.2f} s {o.peak_mb:8.0f} MB ({o.peak_mb / reference:5.1f}x)  {o.line}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
