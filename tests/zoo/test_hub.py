"""Hub downloads through huggingface_hub against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest
from hubserver import HubServer

from tui.zoo.hub import DownloadProgress, HubError, download, select_files

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB, enough for huggingface_hub to stream it in several chunks
FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "tokenizer.model": b"sentencepiece" * 100,
    "model.safetensors": WEIGHTS,
    "pytorch_model.bin": b"pickle" * 100,
    "flax_model.msgpack": b"msgpack" * 100,
}
LFS = {"tokenizer.model", "model.safetensors", "pytorch_model.bin", "flax_model.msgpack"}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        server.add_repo("zoo/tiny", FILES, lfs=LFS)
        yield server


def fetch(tmp_path: Path, repo_id: str = "zoo/tiny", **kwargs) -> object:
    # token=False: never send a developer's own Hub token to the test server.
    return download(repo_id, cache_dir=tmp_path / "cache", token=False, **kwargs)


def resolve_gets(hub: HubServer) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_files_prefers_safetensors_and_skips_other_frameworks():
    assert select_files(FILES) == ["config.json", "model.safetensors", "tokenizer.model"]


def test_select_files_keeps_pickles_when_there_is_no_safetensors():
    names = [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
        "onnx/model.onnx",
    ]
    assert select_files(names) == ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"]


def test_select_files_with_patterns_takes_exactly_those():
    assert select_files(["koala_7b_diff_v2", "koala_13b_diff_v1", "README.md"], ["koala_7b_diff_v2"]) == [
        "koala_7b_diff_v2"
    ]


def test_download_fetches_the_chosen_files_and_reports_progress(hub: HubServer, tmp_path: Path):
    seen: list[DownloadProgress] = []
    snapshot = fetch(tmp_path, on_progress=seen.append)
    assert snapshot.files == ("config.json", "model.safetensors", "tokenizer.model")
    for name in snapshot.files:
        assert (snapshot.directory / name).read_bytes() == FILES[name]
    assert not (snapshot.directory / "pytorch_model.bin").exists()
    total = sum(len(FILES[n]) for n in snapshot.files)
    assert {p.total for p in seen} == {total}
    assert seen[-1].done == total
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    weights = [p for p in seen if p.filename == "model.safetensors"]
    assert weights[-1].file_done == weights[-1].file_total == len(WEIGHTS)
    assert snapshot.directory.parent.name == "snapshots"


def test_a_download_leaves_no_thread_behind(hub: HubServer, tmp_path: Path):
    before = set(threading.enumerate())
    fetch(tmp_path, on_progress=lambda progress: None)
    # The hub server's handler threads wait on the client's kept-alive connections: the server's, not ours.
    left = [t.name for t in set(threading.enumerate()) - before if "process_request" not in t.name]
    assert left == []


def test_a_transfer_cut_halfway_resumes_with_a_range_request(hub: HubServer, tmp_path: Path):
    # huggingface_hub writes in 10 MiB chunks and resumes from the last one written, so the cut
    # must come after the first chunk for the retry to ask for a range.
    big = bytes(range(251)) * (12 * 1024 * 1024 // 251)
    cut = 11 * 1024 * 1024
    hub.add_repo("zoo/big", {"config.json": b"{}", "model.safetensors": big}, lfs={"model.safetensors"})
    hub.cut_next_download("zoo/big", "model.safetensors", after_bytes=cut)
    snapshot = fetch(tmp_path, "zoo/big")
    gets = [r for r in hub.requests if r.path.endswith("/model.safetensors") and r.method == "GET"]
    assert "range" not in gets[0].headers
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut
    assert sha256(snapshot.directory / "model.safetensors") == hashlib.sha256(big).hexdigest()


def test_a_second_run_downloads_nothing_again(hub: HubServer, tmp_path: Path):
    fetch(tmp_path)
    before = len(resolve_gets(hub))
    seen: list[DownloadProgress] = []
    fetch(tmp_path, on_progress=seen.append)
    assert len(resolve_gets(hub)) == before
    assert seen == []


def test_a_stopped_download_continues_with_the_files_it_lacks(hub: HubServer, tmp_path: Path):
    hub.add_repo("zoo/flaky", FILES, lfs=LFS, served_instead={"tokenizer.model": b"x" * len(FILES["tokenizer.model"])})
    with pytest.raises(HubError, match="tokenizer.model does not match"):
        fetch(tmp_path, "zoo/flaky")
    first_run = [path.rsplit("/", 1)[-1] for path in resolve_gets(hub)]
    hub.add_repo("zoo/flaky", FILES, lfs=LFS)  # the same commit, now served intact
    snapshot = fetch(tmp_path, "zoo/flaky")
    second_run = [path.rsplit("/", 1)[-1] for path in resolve_gets(hub)][len(first_run) :]
    assert first_run == ["config.json", "model.safetensors", "tokenizer.model"]
    assert second_run == ["tokenizer.model"]
    assert (snapshot.directory / "tokenizer.model").read_bytes() == FILES["tokenizer.model"]


def test_a_corrupted_transfer_fails_the_sha256_check_and_is_removed(hub: HubServer, tmp_path: Path):
    tampered = bytes(reversed(WEIGHTS))
    hub.add_repo("zoo/tampered", FILES, lfs=LFS, served_instead={"model.safetensors": tampered})
    with pytest.raises(HubError, match="model.safetensors does not match the Hub's sha256"):
        fetch(tmp_path, "zoo/tampered")
    blobs = tmp_path / "cache" / "models--zoo--tampered" / "blobs"
    assert hashlib.sha256(WEIGHTS).hexdigest() not in os.listdir(blobs)


def test_gated_repo_says_how_to_log_in_before_downloading(hub: HubServer, tmp_path: Path):
    hub.add_repo("meta/gated", FILES, lfs=LFS, gated=True)
    with pytest.raises(HubError) as failure:
        fetch(tmp_path, "meta/gated")
    message = str(failure.value)
    assert "meta/gated is gated" in message and "hf auth login" in message and "HF_TOKEN" in message
    assert "\n" not in message
    assert resolve_gets(hub) == []


def test_missing_repo_is_named(hub: HubServer, tmp_path: Path):
    with pytest.raises(HubError, match="nobody/nothing was not found on the Hub"):
        fetch(tmp_path, "nobody/nothing")


def test_offline_mode_refuses_before_any_request(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline mode is on"):
        fetch(tmp_path)
    assert hub.requests == []


def test_unreachable_hub_is_reported_as_a_network_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubError, match="cannot reach http://127.0.0.1"):
        fetch(tmp_path)


def test_too_little_disk_is_caught_from_the_metadata_before_downloading(hub: HubServer, tmp_path: Path):
    hub.add_repo("zoo/huge", FILES, lfs=LFS, advertised_sizes={"model.safetensors": 10**18})
    with pytest.raises(HubError, match="not enough disk space for zoo/huge: it needs 931322574.62 GiB more"):
        fetch(tmp_path, "zoo/huge")
    assert resolve_gets(hub) == []


@pytest.mark.parametrize("name", ["../escape.json", "/etc/passwd", "a/../../b.json", "sub//x.json", "dir\\..\\x.json"])
def test_a_file_list_naming_paths_outside_the_repo_is_refused(hub: HubServer, tmp_path: Path, name: str):
    """A hostile endpoint's listing once ended in an uncaught ValueError from huggingface_hub."""
    hub.add_repo("zoo/escape", {"config.json": b"{}", name: b"x"})
    with pytest.raises(HubError, match=r"lists a file .* which is not a path inside the repo; refusing"):
        fetch(tmp_path, "zoo/escape")
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in hub.requests)
    assert not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize(("name", "lfs"), [("model.safetensors", True), ("config.json", False)])
@pytest.mark.parametrize("etag", ["../../../victim", "/tmp/victim", "ABC", ""])
def test_a_file_list_whose_hashes_are_not_hashes_is_refused(
    hub: HubServer, tmp_path: Path, name: str, lfs: bool, etag: str
):
    """A listed hash names the file's blob in the cache: '../' in it once made a damaged-copy check delete a
    file outside the cache."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    hub.add_repo(
        "zoo/hashes",
        {"config.json": b"{}", "model.safetensors": b"w" * 64},
        lfs={"model.safetensors"} if lfs else (),
        advertised_etags={name: etag},
    )
    with pytest.raises(HubError, match=r"lists .* hash .* not a hash; refusing"):
        fetch(tmp_path, "zoo/hashes")
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in hub.requests)
    assert victim.read_text() == "keep me"


def test_a_space_downloads_like_a_model_repo(tmp_path, monkeypatch):
    """MiniGPT-4 7B's projection checkpoint is published in the authors' Space, not a model repo."""
    from hubserver import HubServer

    from tui.zoo.hub import download, parse_repo

    assert parse_repo("spaces/Vision-CAIR/minigpt4") == ("space", "Vision-CAIR/minigpt4")
    assert parse_repo("Vision-CAIR/MiniGPT-4") == ("model", "Vision-CAIR/MiniGPT-4")
    with HubServer() as hub:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_repo("spaces/owner/demo", {"app.py": b"print()", "weights.pth": b"w" * 1000}, lfs={"weights.pth"})
        hub.add_repo("owner/demo", {"other.bin": b"model repo of the same name"})
        snapshot = download(
            "spaces/owner/demo", patterns=["weights.pth"], cache_dir=tmp_path, endpoint=hub.url, token=False
        )
        assert snapshot.files == ("weights.pth",)
        assert (snapshot.directory / "weights.pth").read_bytes() == b"w" * 1000
        assert "spaces--owner--demo" in str(snapshot.directory)
        assert any(r.path.startswith("/spaces/owner/demo/resolve/") for r in hub.requests)
