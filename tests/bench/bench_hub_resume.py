"""Bytes a killed download fetches again when it runs a second time: zootui against huggingface_hub alone.

    .venv/bin/python tests/bench/bench_hub_resume.py [--mib 300] [--load 0]

Publishes one generated LFS file of --mib MiB on the local Hub server (tests/hubserver.py, behind a redirect
to a second origin as the Hub serves LFS files), then, for zootui's download (``tui.zoo.hub.download``, what
``zootui pull`` runs) and for huggingface_hub's ``hf_hub_download`` on its own, side by side in one run:
downloads it whole into a fresh cache; downloads it again into another, kill -9'ing the process once half
the file is on disk; and runs that download once more. Prints the bytes the server sent and the seconds
each run took, and the resumed run's bytes as a share of the whole file. --load starts that many busy
processes beside it (the machine may be shared too: its load average is printed).
Not part of the test run: timings on shared machines are noisy, so read the byte counts and ratios.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from hubserver import HubServer  # noqa: E402

REPO, NAME = "bench/resume", "model.safetensors"

ZOOTUI = """
import sys
from pathlib import Path
from tui.zoo.hub import download
download(sys.argv[1], cache_dir=Path(sys.argv[2]), endpoint=sys.argv[3], token=False)
"""

HF_ALONE = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download(sys.argv[1], "model.safetensors", cache_dir=sys.argv[2], endpoint=sys.argv[3], token=False)
"""


def run(hub: HubServer, script: str, cache: Path, kill_at: int | None) -> tuple[int, float, bool]:
    """(bytes the server sent, seconds, whether it was killed) for one download into ``cache``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env.pop("HF_HUB_OFFLINE", None)
    sent_before = hub.bytes_sent(REPO, NAME)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script, REPO, str(cache), hub.url], env=env)
    killed = False
    while process.poll() is None:
        if kill_at is not None and on_disk(cache) >= kill_at:
            process.send_signal(signal.SIGKILL)
            killed = True
            process.wait()
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if not killed and process.returncode != 0:
        raise SystemExit(f"the download exited {process.returncode}")
    return hub.bytes_sent(REPO, NAME) - sent_before, elapsed, killed


def on_disk(cache: Path) -> int:
    """Bytes of the file written so far, in whichever partial the downloader keeps."""
    blobs = cache / f"models--{REPO.replace('/', '--')}" / "blobs"
    return max((p.stat().st_size for p in blobs.glob("*.incomplete")), default=0) if blobs.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=300)
    parser.add_argument("--load", type=int, default=0, help="busy processes to run beside it")
    args = parser.parse_args()
    size = args.mib * 2**20
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with HubServer(cdn=True) as hub, tempfile.TemporaryDirectory() as scratch:
            hub.add_repo(REPO, {"config.json": b"{}", NAME: os.urandom(size)}, lfs={NAME})
            print(f"file: {args.mib} MiB; busy processes: {args.load}; load average: {os.getloadavg()[0]:.2f}")
            print(
                f"{'':22} {'whole: MiB':>10} {'s':>6} | {'killed at: MiB':>14} {'s':>6} | {'rerun: MiB':>10} {'s':>6}"
            )
            for label, script in (("zootui", ZOOTUI), ("huggingface_hub alone", HF_ALONE)):
                whole, whole_s, _ = run(hub, script, Path(scratch) / f"{label}-whole", None)
                cache = Path(scratch) / f"{label}-killed"
                first, first_s, killed = run(hub, script, cache, kill_at=size // 2)
                if not killed:
                    raise SystemExit(f"{label} finished before it could be killed; use a larger --mib")
                second, second_s, _ = run(hub, script, cache, None)
                print(
                    f"{label:22} {whole / 2**20:10.1f} {whole_s:6.2f} | {first / 2**20:14.1f} {first_s:6.2f} |"
                    f" {second / 2**20:10.1f} {second_s:6.2f}   rerun = {second / size:.0%} of the file"
                )
            print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        for process in busy:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
