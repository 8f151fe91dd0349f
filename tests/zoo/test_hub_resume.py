"""LFS downloads that stop part way continue from the bytes they had, against a real local Hub server."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer

from tui.zoo.hub import DownloadProgress, HubError, download
from tui.zoo.hub_blobs import PARTIAL_SUFFIX

MiB = 2**20
# huggingface_hub's http_get writes what it receives in 10 MiB chunks: a file of several of them
# leaves a partial of whole chunks when its process is killed.
BIG = bytes(range(251)) * (40 * MiB // 251)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
FOLDER = "models--zoo--big"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    # The LFS files behind a redirect to another origin, as the Hub serves them.
    with HubServer(cdn=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        server.add_repo("zoo/big", {"config.json": b"{}", "model.safetensors": BIG}, lfs={"model.safetensors"})
        yield server


def fetch(tmp_path: Path, token: str | bool = False, **kwargs):
    return download("zoo/big", cache_dir=tmp_path / "cache", token=token, **kwargs)


def partial(tmp_path: Path) -> Path:
    return tmp_path / "cache" / FOLDER / "blobs" / f"{BIG_SHA}{PARTIAL_SUFFIX}"


def weight_gets(hub: HubServer) -> list:
    return [r for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/zoo/big/model.safetensors")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


KILL_MID_FILE = """
import os, signal, sys
from pathlib import Path
from tui.zoo.hub import download

def progress(report):
    if report.filename == "model.safetensors" and report.file_done >= 25 * 2**20:
        os.kill(os.getpid(), signal.SIGKILL)  # as a closed terminal or the OOM killer would

download("zoo/big", cache_dir=Path(sys.argv[1]), endpoint=sys.argv[2], token="hf_zootui_test", on_progress=progress)
"""


def test_a_download_killed_mid_file_continues_with_the_bytes_it_lacked(hub: HubServer, tmp_path: Path):
    killed = subprocess.run(
        [sys.executable, "-c", KILL_MID_FILE, str(tmp_path / "cache"), hub.url],
        env=subprocess_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = partial(tmp_path).stat().st_size
    assert 0 < kept < len(BIG)
    sent_before = hub.bytes_sent("zoo/big", "model.safetensors")

    seen: list[DownloadProgress] = []
    snapshot = fetch(tmp_path, token="hf_zootui_test", on_progress=seen.append)

    resumed = weight_gets(hub)[-1]
    assert resumed.headers["range"] == f"bytes={kept}-"
    assert hub.bytes_sent("zoo/big", "model.safetensors") - sent_before == len(BIG) - kept
    assert sha256(snapshot.directory / "model.safetensors") == BIG_SHA
    assert snapshot.sha256["model.safetensors"] == BIG_SHA
    assert not partial(tmp_path).exists()
    weights = [p for p in seen if p.filename == "model.safetensors"]
    assert weights[0].note == "resuming at 20.0 MiB of 40.0 MiB"
    assert next(p.file_done for p in weights if p.file_done) == kept  # counted as done, not fetched again
    assert seen[-1].done == seen[-1].total
    # The token goes to the Hub, never to the storage host the Hub redirects to.
    assert all("authorization" in r.headers for r in hub.requests if "/resolve/" in r.path)
    assert not any("authorization" in r.headers for r in weight_gets(hub))


def test_the_resumed_file_is_found_as_huggingface_hub_would_have_left_it(hub: HubServer, tmp_path: Path):
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    snapshot = fetch(tmp_path)
    pointer = snapshot.directory / "model.safetensors"
    assert pointer.is_symlink() and os.readlink(pointer) == f"../../blobs/{BIG_SHA}"
    cache = tmp_path / "cache"
    assert try_to_load_from_cache("zoo/big", "model.safetensors", cache_dir=cache, revision=snapshot.commit) == str(
        pointer
    )
    before = len(hub.requests)
    found = hf_hub_download("zoo/big", "model.safetensors", revision=snapshot.commit, cache_dir=cache)
    assert found == str(pointer)
    assert len(hub.requests) == before  # hf_hub_download found it without asking the Hub


def test_a_partial_whose_bytes_are_wrong_is_fetched_again_from_the_start(hub: HubServer, tmp_path: Path):
    fetch(tmp_path)  # creates the cache folders; then the file is made to be missing with a bad partial
    snapshot_file = next((tmp_path / "cache" / FOLDER / "snapshots").glob("*/model.safetensors"))
    snapshot_file.unlink()
    (tmp_path / "cache" / FOLDER / "blobs" / BIG_SHA).unlink()
    partial(tmp_path).write_bytes(b"\0" * (3 * MiB))
    gets_before = len(weight_gets(hub))

    seen: list[DownloadProgress] = []
    snapshot = fetch(tmp_path, on_progress=seen.append)

    gets = weight_gets(hub)[gets_before:]
    assert [g.headers.get("range") for g in gets] == [f"bytes={3 * MiB}-", None]
    assert sha256(snapshot.directory / "model.safetensors") == BIG_SHA
    assert not partial(tmp_path).exists()
    assert any("did not hash right" in p.note for p in seen)
    assert seen[-1].done == seen[-1].total == len(BIG) + 2  # the listing's config.json is 2 bytes


def test_a_partial_larger_than_the_file_is_discarded(hub: HubServer, tmp_path: Path):
    partial(tmp_path).parent.mkdir(parents=True)
    partial(tmp_path).write_bytes(BIG + b"more")
    seen: list[DownloadProgress] = []
    snapshot = fetch(tmp_path, on_progress=seen.append)
    assert [g.headers.get("range") for g in weight_gets(hub)] == [None]
    assert sha256(snapshot.directory / "model.safetensors") == BIG_SHA
    assert any("holds more than the file" in p.note for p in seen)


def test_a_server_answering_a_range_with_the_whole_file_restarts_it_cleanly(hub: HubServer, tmp_path: Path):
    partial(tmp_path).parent.mkdir(parents=True)
    partial(tmp_path).write_bytes(BIG[: 12 * MiB])
    hub.ignore_ranges()
    seen: list[DownloadProgress] = []
    snapshot = fetch(tmp_path, on_progress=seen.append)
    assert [g.headers.get("range") for g in weight_gets(hub)] == [f"bytes={12 * MiB}-"]
    assert hub.bytes_sent("zoo/big", "model.safetensors") == len(BIG)
    assert sha256(snapshot.directory / "model.safetensors") == BIG_SHA
    assert seen[-1].done == seen[-1].total


def test_a_partial_complete_in_length_is_checked_without_a_request(hub: HubServer, tmp_path: Path):
    partial(tmp_path).parent.mkdir(parents=True)
    partial(tmp_path).write_bytes(BIG)
    snapshot = fetch(tmp_path)
    assert weight_gets(hub) == []
    assert sha256(snapshot.directory / "model.safetensors") == BIG_SHA


def test_partials_no_download_can_use_are_removed(hub: HubServer, tmp_path: Path):
    blobs = tmp_path / "cache" / FOLDER / "blobs"
    blobs.mkdir(parents=True)
    old_revision = blobs / f"{'0' * 64}{PARTIAL_SUFFIX}"  # of a file this commit no longer has
    old_revision.write_bytes(b"x" * 100)
    hf_orphan = blobs / f"{BIG_SHA}.0123abcd.incomplete"  # what a killed hf_hub_download leaves
    hf_orphan.write_bytes(b"y" * 100)
    fetch(tmp_path)
    assert not old_revision.exists() and not hf_orphan.exists()
    partial(tmp_path).write_bytes(BIG[:MiB])  # of a blob the cache has now
    fetch(tmp_path)
    assert list(blobs.glob("*.incomplete")) == []


def test_a_server_sending_more_than_the_listed_size_is_stopped_there(hub: HubServer, tmp_path: Path):
    hub.add_repo(
        "zoo/big",
        {"config.json": b"{}", "model.safetensors": BIG},
        lfs={"model.safetensors"},
        served_instead={"model.safetensors": BIG + BIG},
    )
    with pytest.raises(HubError, match="the Hub sent more than the 41942853 bytes it lists for model.safetensors"):
        fetch(tmp_path)
    assert hub.bytes_sent("zoo/big", "model.safetensors") < 2 * len(BIG)
    assert list((tmp_path / "cache" / FOLDER / "blobs").glob(f"{BIG_SHA}*")) == []


HOLD_MID_FILE = """
import sys, time
from pathlib import Path
from tui.zoo.hub import download

held = False
def progress(report):
    global held
    if report.filename == "model.safetensors" and report.file_done > 0 and not held:
        held = True
        print("holding", flush=True)
        release = Path(sys.argv[3])
        for _ in range(1200):
            if release.exists():
                break
            time.sleep(0.05)

download("zoo/big", cache_dir=Path(sys.argv[1]), endpoint=sys.argv[2], token=False, on_progress=progress)
"""

WAIT_FOR_BLOB = """
import sys
from pathlib import Path
from tui.zoo.hub import download

said = False
def progress(report):
    global said
    if report.note.startswith("waiting") and not said:
        said = True
        print("waiting", flush=True)

snapshot = download("zoo/big", cache_dir=Path(sys.argv[1]), endpoint=sys.argv[2], token=False, on_progress=progress)
print(snapshot.sha256["model.safetensors"], flush=True)
"""

HF_DOWNLOAD = """
import sys
from huggingface_hub import hf_hub_download
print(hf_hub_download("zoo/big", "model.safetensors", revision=sys.argv[3], cache_dir=sys.argv[1], endpoint=sys.argv[2]))
"""


@pytest.mark.slow  # three Python processes that import huggingface_hub: 2.0-2.1 CPU-seconds on a quiet machine
def test_downloads_of_one_blob_at_once_wait_for_each_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """zootui in two processes, and huggingface_hub in a third, never write one blob at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as hub:
        repo = hub.add_repo("zoo/big", {"config.json": b"{}", "model.safetensors": BIG}, lfs={"model.safetensors"})
        cache, release = tmp_path / "cache", tmp_path / "release"
        run = {"env": subprocess_env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        first = subprocess.Popen([sys.executable, "-c", HOLD_MID_FILE, str(cache), hub.url, str(release)], **run)
        try:
            assert first.stdout.readline() == "holding\n"
            second = subprocess.Popen([sys.executable, "-c", WAIT_FOR_BLOB, str(cache), hub.url], **run)
            assert second.stdout.readline() == "waiting\n"
            third = subprocess.Popen([sys.executable, "-c", HF_DOWNLOAD, str(cache), hub.url, repo.commit], **run)
        finally:
            release.touch()
        outputs = [p.communicate(timeout=120) for p in (first, second, third)]
        assert [p.returncode for p in (first, second, third)] == [0, 0, 0], outputs
        assert outputs[1][0].splitlines()[-1] == BIG_SHA  # checked on the blob the first one placed
        gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
        assert len(gets) == 1
        pointer = Path(outputs[2][0].strip())
        assert sha256(pointer) == BIG_SHA
        assert list((cache / FOLDER / "blobs").glob("*.incomplete")) == []
