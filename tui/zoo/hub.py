"""Downloads from the Hugging Face Hub, through huggingface_hub and into its standard cache.

``download`` picks the files a model needs, checks the disk before it starts, reports progress
per file, and verifies the sha256 of every LFS file it fetched against the Hub's metadata.
Interrupted downloads continue where they stopped: a run skips the files already in the cache, and
an LFS file (the weights) whose transfer was cut off, by a dropped connection or a killed process,
continues from the bytes it had (``hub_blobs``; huggingface_hub 2.4 cannot, see
``_remove_dead_partials``). Small files kept in git go through hf_hub_download and start again.

Every failure a user can act on surfaces as ``HubError`` with one line saying what to do.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import httpx2
from filelock import Timeout
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoSibling
from huggingface_hub.utils import tqdm as hf_tqdm

from tui.zoo.hub_blobs import PARTIAL_SUFFIX, Blob, DigestMismatch, Oversized, blob_lock, fetch_blob


class HubError(Exception):
    """A download failed for a reason the user can act on; the message is one line."""


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes received so far, for the file in flight and for the whole download."""

    filename: str
    file_done: int
    file_total: int
    done: int
    total: int
    note: str = ""
    """One line about this file's transfer: resumed, started again, or waiting for another process."""

    @property
    def detail(self) -> str:
        """The file's name, with its note if it has one."""
        return f"{self.filename} ({self.note})" if self.note else self.filename


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class Snapshot:
    """A downloaded revision: ``directory`` is huggingface_hub's snapshot folder in its cache."""

    repo_id: str
    commit: str
    directory: Path
    files: tuple[str, ...]
    sha256: dict[str, str] = field(default_factory=dict)
    """Digests of the files this download fetched and checked against the Hub's (read once, here)."""


# Weight formats other runtimes use and zootui never reads.
_FOREIGN_WEIGHTS = ("*.h5", "*.msgpack", "*.ckpt", "*.onnx", "*.onnx_data", "onnx/*", "*.ot", "*.tflite", "*.gguf")
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth")
_PICKLE_INDEX = "pytorch_model.bin.index.json"
_LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"
_OFFLINE = "cannot download {repo_id}: offline mode is on (HF_HUB_OFFLINE); unset it to download"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_BLOB_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1, or sha256 in sha256 repositories


def select_files(filenames: Iterable[str], patterns: Iterable[str] = ()) -> list[str]:
    """The files to fetch from a repo listing.

    With ``patterns`` (a catalog variant's ``files``), exactly the matching files. Otherwise
    everything except other frameworks' weights, and, when the repo has safetensors, its pickled
    weights too (safetensors load without unpickling and memory-map).
    """
    names = sorted(filenames)
    wanted = tuple(patterns)
    if wanted:
        return [n for n in names if _matches(n, wanted)]
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    skipped = _FOREIGN_WEIGHTS + ((*_PICKLED_WEIGHTS, _PICKLE_INDEX) if has_safetensors else ())
    return [n for n in names if not _matches(n, skipped)]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns)


_REPO_TYPES = {"spaces/": "space", "datasets/": "dataset"}


def parse_repo(reference: str) -> tuple[str, str]:
    """(repo type, repo id) of a repo as its Hub address names it: ``owner/name`` is a model repo,
    ``spaces/owner/name`` a Space and ``datasets/owner/name`` a dataset (huggingface.co/<reference>)."""
    for prefix, repo_type in _REPO_TYPES.items():
        if reference.startswith(prefix):
            return repo_type, reference[len(prefix) :]
    return "model", reference


def download(
    repo_id: str,
    *,
    revision: str = "main",
    patterns: Iterable[str] = (),
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    on_progress: ProgressCallback | None = None,
) -> Snapshot:
    """Fetch the files of ``repo_id`` that zootui needs into the Hub cache.

    ``repo_id`` is a model repo, or a Space or dataset as ``parse_repo`` reads it. ``endpoint`` defaults to ``HF_ENDPOINT`` read now (huggingface_hub reads it only at import);
    ``token`` defaults to the standard login (``HF_TOKEN`` or ``hf auth login``).
    """
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if _offline():
        raise HubError(_OFFLINE.format(repo_id=repo_id))
    repo = _Repo(repo_id, *parse_repo(repo_id))
    siblings, commit, gated = _repo_listing(repo, revision, endpoint, token)
    wanted = set(select_files((s.rfilename for s in siblings), patterns))
    chosen = [s for s in siblings if s.rfilename in wanted]
    if not chosen:
        raise HubError(f"{repo_id} has no files zootui can use at {revision}")
    missing = [s for s in chosen if not _cached(repo, s.rfilename, commit, cache_dir)]
    storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(
        repo_id=repo.repo_id, repo_type=repo.repo_type
    )
    _check_disk_space(repo_id, missing, storage)
    if gated and missing:
        _check_access(repo, missing[0].rfilename, commit, endpoint, token)
    _remove_dead_partials(storage, siblings, missing)
    total = sum(s.size or 0 for s in chosen)
    report = _Progress(on_progress, total=total, done=total - sum(s.size or 0 for s in missing))
    verified: dict[str, str] = {}
    for sibling in missing:
        path, digest = _fetch(repo, sibling, commit, storage, endpoint, token, report)
        digest = digest or _verify(sibling, path)
        if digest is not None:
            verified[sibling.rfilename] = digest
    directory = storage / "snapshots" / commit
    return Snapshot(repo_id, commit, directory, tuple(s.rfilename for s in chosen), verified)


def search_models(query: str, *, limit: int = 30, endpoint: str | None = None) -> list[str]:
    """Ids of Hub models whose name matches ``query``, most downloaded first."""
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if _offline():
        raise HubError("cannot search the Hub: offline mode is on (HF_HUB_OFFLINE); unset it to search")
    try:
        return [model.id for model in HfApi(endpoint=endpoint).list_models(search=query, limit=limit, sort="downloads")]
    except (OfflineModeIsEnabled, httpx2.ConnectError, httpx2.TimeoutException) as error:
        raise HubError(f"cannot reach {endpoint or 'huggingface.co'} to search the Hub: check the network") from error


def _offline() -> bool:
    # Read at call time, with huggingface_hub's spelling of true, so a setting made after start counts.
    return any(
        os.environ.get(variable, "").upper() in {"1", "ON", "YES", "TRUE"}
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True)
class _Repo:
    reference: str
    """As users and messages name it (``parse_repo``)."""
    repo_type: str
    repo_id: str


def _repo_listing(
    repo: _Repo, revision: str, endpoint: str | None, token: str | bool | None
) -> tuple[list[RepoSibling], str, bool]:
    """Files with sizes and LFS hashes, the commit the revision points at, and whether it is gated."""
    try:
        info = HfApi(endpoint=endpoint, token=token).repo_info(
            repo.repo_id, repo_type=repo.repo_type, revision=revision, files_metadata=True
        )
    except _TRANSLATED as error:
        _raise_translated(error, repo.reference, revision, endpoint)
    hub = endpoint or "huggingface.co"
    if info.sha is None or info.siblings is None:
        raise HubError(f"the Hub at {hub} sent no file list for {repo.reference}")
    # Both become paths in the cache: a commit or file name that climbs out of it would write anywhere.
    if not _COMMIT.fullmatch(info.sha):
        raise HubError(
            f"the Hub at {hub} named {repo.reference}'s commit {info.sha[:80]!r}, not a commit hash; check HF_ENDPOINT"
        )
    for sibling in info.siblings:
        if not _is_repo_path(sibling.rfilename):
            raise HubError(
                f"the Hub at {hub} lists a file {sibling.rfilename[:80]!r} in {repo.reference}, which is not a path inside"
                " the repo; refusing to download it (check HF_ENDPOINT)"
            )
        # A file's hash names its blob in the cache (and its lock and partial): '../' in one would reach anywhere.
        hashes = [(sibling.lfs.sha256, _SHA256)] if sibling.lfs is not None else []
        if sibling.blob_id is not None:
            hashes.append((sibling.blob_id, _GIT_BLOB_ID))
        for listed, form in hashes:
            if not isinstance(listed, str) or not form.fullmatch(listed):
                raise HubError(
                    f"the Hub at {hub} lists {sibling.rfilename[:80]!r} in {repo.reference} with the hash"
                    f" {str(listed)[:80]!r}, which is not a hash; refusing to download it (check HF_ENDPOINT)"
                )
    return list(info.siblings), info.sha, bool(info.gated)


def _is_repo_path(name: str) -> bool:
    """A relative path of plain names, as files in a Hub repo are (``model.safetensors``, ``onnx/model.onnx``)."""
    parts = name.split("/")
    return bool(name) and "\\" not in name and "\0" not in name and all(p not in ("", ".", "..") for p in parts)


# What huggingface_hub raises for the failures ``_raise_translated`` words for users.
_TRANSLATED = (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    LocalEntryNotFoundError,
    httpx2.ConnectError,
    httpx2.TimeoutException,
)


def _raise_translated(error: Exception, repo_id: str, revision: str, endpoint: str | None) -> NoReturn:
    """Raise one actionable line for the failures users meet; anything else propagates unchanged."""
    if isinstance(error, GatedRepoError):
        message = f"{repo_id} is gated: accept its terms at https://huggingface.co/{repo_id}, then {_LOGIN_HINT}"
    elif isinstance(error, RevisionNotFoundError):
        message = f"{repo_id} has no revision {revision!r}"
    elif isinstance(error, RepositoryNotFoundError):
        message = f"{repo_id} was not found on the Hub (if it is private, {_LOGIN_HINT})"
    elif isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        message = _OFFLINE.format(repo_id=repo_id)
    elif isinstance(error, (httpx2.ConnectError, httpx2.TimeoutException)):
        message = (
            f"cannot reach {endpoint or 'huggingface.co'} to download {repo_id}: "
            "check the network, or set HF_HUB_OFFLINE=1 to work from the cache"
        )
    elif isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code == 401:
        message = f"the Hub refused the credentials for {repo_id}: {_LOGIN_HINT} again"
    else:
        raise error
    raise HubError(message) from error


def _cached(repo: _Repo, filename: str, commit: str, cache_dir: Path | None) -> str | None:
    found = try_to_load_from_cache(
        repo.repo_id, filename, cache_dir=cache_dir, revision=commit, repo_type=repo.repo_type
    )
    return found if isinstance(found, str) else None


def _remove_dead_partials(storage: Path, siblings: list[RepoSibling], missing: list[RepoSibling]) -> None:
    """Remove what killed downloads left in the repo's cache folder that no later download can use.

    huggingface_hub cannot resume a download across runs, and this is why. It writes each transfer to a
    file of its own (``<etag>.<8 hex>.incomplete``, opened "wb") and deletes it when the transfer fails;
    it resumes only within that transfer (a dropped connection continues with a Range request). It has
    done so since huggingface_hub#4306 (in 1.18; its code cites #4228), which stopped reusing
    ``<etag>.incomplete`` on purpose: on filesystems whose flock is a no-op, two processes appended to
    one partial and poisoned the cache. No option of 2.4 brings resume back (``resume_download`` is
    gone, ``local_dir`` downloads go through the same per-transfer file, hf_xet writes a fresh file
    too), and huggingface_hub#4196 (no resume across runs) is open. So what a killed huggingface_hub
    transfer left, of the files this download still needs, is never read again and goes here.

    zootui's own partials of LFS files (``hub_blobs``) are what a killed run resumes from; they go only
    when they cannot be used: the blob is in the cache already, or it belongs to no file of this commit
    (the repo moved on). A partial whose blob lock is taken belongs to a running download and stays.
    """
    blobs = storage / "blobs"
    dead: list[Path] = []
    for sibling in missing:
        etag = sibling.lfs.sha256 if sibling.lfs is not None else sibling.blob_id
        if etag:
            dead += (p for p in blobs.glob(f"{etag}.*incomplete") if _HF_PARTIAL.fullmatch(p.name[len(etag) :]))
    wanted = {s.lfs.sha256 for s in siblings if s.lfs is not None}
    for partial in blobs.glob(f"*{PARTIAL_SUFFIX}"):
        etag = partial.name.removesuffix(PARTIAL_SUFFIX)
        if etag not in wanted or (blobs / etag).exists():
            dead.append(partial)
    for partial in dead:
        lock = blob_lock(storage, partial.name.split(".", 1)[0])
        try:
            lock.acquire(timeout=0)
        except Timeout:  # another process is downloading it now
            continue
        try:
            partial.unlink(missing_ok=True)
        finally:
            lock.release()


# What hf_hub_download's partials are called after their etag (``_download_to_tmp_and_move``; before 1.18
# a bare ``.incomplete``).
_HF_PARTIAL = re.compile(r"(\.[0-9a-f]{8})?\.incomplete")


def _check_disk_space(repo_id: str, missing: list[RepoSibling], storage: Path) -> None:
    """The files still missing must fit, less what their partials already hold."""
    needed = sum(s.size or 0 for s in missing) - sum(_partial_size(storage, s) for s in missing)
    target = storage.parent
    existing = next(p for p in (target, *target.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        from converters import human_size

        raise HubError(
            f"not enough disk space for {repo_id}: it needs {human_size(needed)} more in {target}, "
            f"which has {human_size(free)} free"
        )


def _partial_size(storage: Path, sibling: RepoSibling) -> int:
    if sibling.lfs is None:
        return 0
    try:
        return min(Blob(storage, sibling.lfs.sha256, sibling.size or 0).partial.stat().st_size, sibling.size or 0)
    except FileNotFoundError:
        return 0


def _check_access(repo: _Repo, filename: str, commit: str, endpoint: str | None, token: str | bool | None) -> None:
    """Ask for one file's metadata so a gated repo fails before any transfer starts."""
    url = hf_hub_url(repo.repo_id, filename, revision=commit, endpoint=endpoint, repo_type=repo.repo_type)
    try:
        get_hf_file_metadata(url, token=token)
    except _TRANSLATED as error:
        _raise_translated(error, repo.reference, commit, endpoint)


class _Progress:
    """Totals across files, fed by one ``_FileProgressBar`` per transfer and by ``hub_blobs``' notes."""

    def __init__(self, callback: ProgressCallback | None, total: int, done: int) -> None:
        self.callback = callback
        self.total = total
        self.done = done
        self._file_done: dict[str, int] = {}
        self._notes: dict[str, str] = {}

    def file(self, filename: str, file_done: int, file_total: int) -> None:
        """``filename`` holds ``file_done`` bytes now (fewer than before when its transfer started again)."""
        before = self._file_done.get(filename, 0)
        if file_done == before and filename in self._file_done:
            return
        self.done += file_done - before
        self._file_done[filename] = file_done
        self._report(filename, file_total)

    def note(self, filename: str, file_total: int, text: str) -> None:
        self._notes[filename] = text
        self._report(filename, file_total)

    def _report(self, filename: str, file_total: int) -> None:
        if self.callback is not None:
            file_done = self._file_done.get(filename, 0)
            note = self._notes.get(filename, "")
            self.callback(DownloadProgress(filename, file_done, file_total, self.done, self.total, note))


class _FileProgressBar(hf_tqdm):
    """huggingface_hub's progress bar, silenced, turning its updates into ``DownloadProgress`` calls.

    huggingface_hub creates one (``tqdm_class``) per transfer and feeds it byte counts, negative
    when a server ignored a resume Range and the file restarts; a transfer continuing a partial
    creates it with the partial's bytes as ``initial``. ``for_file`` binds the file.
    """

    progress: ClassVar[_Progress]
    filename: ClassVar[str]
    file_total: ClassVar[int]
    # tqdm starts a monitor thread for each bar class (for_file makes one per file) and a silenced bar never
    # stops it: each file downloaded left a thread behind for the life of the app, holding its progress
    # callback and so the job that asked for it.
    monitor_interval = 0

    @classmethod
    def for_file(cls, progress: _Progress, filename: str, file_total: int) -> type[_FileProgressBar]:
        return type(cls.__name__, (cls,), {"progress": progress, "filename": filename, "file_total": file_total})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self._file_done = int(kwargs.get("initial") or 0)
        self.progress.file(self.filename, self._file_done, self.file_total)

    def update(self, n: float | None = 1) -> bool | None:
        self._file_done += int(n or 0)
        self.progress.file(self.filename, self._file_done, self.file_total)
        return super().update(n)

    # Having these makes huggingface_hub report network bytes to this same bar instead of creating
    # a second one (Xet downloads); only the file bytes in ``update`` count, so both are no-ops.
    def update_transfer(self, n: float | None = 1) -> None:
        """Network bytes, which Xet may fetch more or fewer of than the file holds: ignored."""

    def set_transfer_postfix_str(self, postfix: str, refresh: bool = False) -> None:
        """Transfer speed text for a console bar: ignored."""


def _fetch(
    repo: _Repo,
    sibling: RepoSibling,
    commit: str,
    storage: Path,
    endpoint: str | None,
    token: str | bool | None,
    progress: _Progress,
) -> tuple[Path, str | None]:
    """The file's snapshot path, and its sha256 when it was taken from the bytes as they arrived."""
    size = sibling.size or 0
    bar = _FileProgressBar.for_file(progress, sibling.rfilename, size)
    try:
        if sibling.lfs is None:
            path = hf_hub_download(
                repo.repo_id,
                sibling.rfilename,
                repo_type=repo.repo_type,
                revision=commit,
                cache_dir=storage.parent,
                endpoint=endpoint,
                token=token,
                tqdm_class=bar,
            )
            return Path(path), None
        url = hf_hub_url(repo.repo_id, sibling.rfilename, revision=commit, endpoint=endpoint, repo_type=repo.repo_type)
        pointer = storage / "snapshots" / commit / sibling.rfilename
        blob = Blob(storage, sibling.lfs.sha256, size)
        digest = fetch_blob(
            blob, url, pointer, token=token, bar=bar, note=lambda text: progress.note(sibling.rfilename, size, text)
        )
        return pointer, digest
    except _TRANSLATED as error:
        _raise_translated(error, repo.reference, commit, endpoint)
    except DigestMismatch as error:
        _raise_damaged(sibling, error.got)
    except Oversized as error:
        raise HubError(
            f"the Hub sent more than the {size} bytes it lists for {sibling.rfilename}; nothing was kept, "
            "run the download again"
        ) from error


def _verify(sibling: RepoSibling, path: Path) -> str | None:
    """Compare an LFS file with the sha256 the Hub lists and return it; a damaged copy is removed from the
    cache. None for a file the Hub lists no sha256 for (small files kept in git)."""
    if sibling.lfs is None:
        return None
    from converters import sha256_file

    digest = sha256_file(path)
    if digest != sibling.lfs.sha256:
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
        _raise_damaged(sibling, str(digest))
    return digest


def _raise_damaged(sibling: RepoSibling, got: str) -> NoReturn:
    assert sibling.lfs is not None
    raise HubError(
        f"{sibling.rfilename} does not match the Hub's sha256 (expected {sibling.lfs.sha256[:12]}…, "
        f"got {got[:12]}…); the damaged copy was removed, run the download again"
    )
