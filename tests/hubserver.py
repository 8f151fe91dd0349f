"""A small Hugging Face Hub on 127.0.0.1 for tests (stdlib only).

It answers the requests huggingface_hub makes to download a repo (a model; a Space or a dataset when
it is published as ``spaces/owner/name`` or ``datasets/owner/name``, the paths the Hub uses):

- ``GET /api/models/{repo}/revision/{rev}[?blobs=true]``: repo info with ``sha``, ``gated`` and
  ``siblings`` (size, blobId, and ``lfs.sha256`` for LFS files).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag``
  (sha256 for LFS files, git blob sha1 otherwise), ``X-Linked-Etag``/``X-Linked-Size`` for LFS
  files, and ``Range: bytes=N-`` answered with 206 (416 past the end).
- With ``HubServer(cdn=True)``, LFS files as the Hub serves them: ``resolve`` answers 302 with those
  headers and a ``Location`` on a second origin (another port), which serves the bytes and Ranges.

Errors carry the ``X-Error-Code`` huggingface_hub maps to exceptions: ``RepoNotFound`` (404),
``GatedRepo`` (401 without a token, 403 with one), ``RevisionNotFound`` and ``EntryNotFound``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit


@dataclass
class HubFile:
    content: bytes
    lfs: bool
    advertised_size: int | None = None
    served: bytes | None = None
    advertised_etag: str | None = None

    @property
    def etag(self) -> str:
        if self.lfs:
            return hashlib.sha256(self.content).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + self.files[name].content)
        self.commit = digest.hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Names lower-cased."""


@dataclass
class _State:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    cuts: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cdn_url: str | None = None
    ignore_ranges: bool = False
    bytes_sent: dict[str, int] = field(default_factory=dict)
    """Body bytes sent per file path (``repo/path``), across requests."""


_INFO = re.compile(r"^/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<kind>spaces/|datasets/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")
_CDN = re.compile(r"^/cdn/(?P<repo>(?:spaces/|datasets/)?[^/]+/[^/]+)/(?P<path>.+)$")


class HubServer:
    """Run with ``with HubServer() as hub:``; point ``HF_ENDPOINT`` at ``hub.url``."""

    def __init__(self, cdn: bool = False) -> None:
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self._state))
        self._servers = [self._server]
        if cdn:
            self._servers.append(ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self._state)))
            self._state.cdn_url = f"http://127.0.0.1:{self._servers[1].server_port}"
        self._threads = []
        for server in self._servers:
            server.daemon_threads = True
            # A short poll interval keeps shutdown (once per test) fast.
            serve = partial(server.serve_forever, poll_interval=0.02)
            self._threads.append(threading.Thread(target=serve, name="hubserver", daemon=True))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def cdn_url(self) -> str | None:
        return self._state.cdn_url

    def __enter__(self) -> HubServer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server, thread in zip(self._servers, self._threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join()

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        lfs: Collection[str] = (),
        gated: bool = False,
        advertised_sizes: Mapping[str, int] | None = None,
        served_instead: Mapping[str, bytes] | None = None,
        advertised_etags: Mapping[str, str] | None = None,
    ) -> HubRepo:
        """Publish a repo. ``advertised_sizes``, ``served_instead`` and ``advertised_etags`` make the server
        lie about a file's size or hash (blobId, and lfs.sha256 for LFS files) in the repo info, or send
        other bytes than the metadata describes."""
        sizes = advertised_sizes or {}
        served = served_instead or {}
        etags = advertised_etags or {}
        repo = HubRepo(
            repo_id,
            {
                name: HubFile(content, name in lfs, sizes.get(name), served.get(name), etags.get(name))
                for name, content in files.items()
            },
            gated=gated,
        )
        with self._state.lock:
            self._state.repos[repo_id] = repo
        return repo

    def cut_next_download(self, repo_id: str, path: str, after_bytes: int) -> None:
        """Close the connection after ``after_bytes`` of the next GET of this file."""
        with self._state.lock:
            self._state.cuts[(repo_id, path)] = after_bytes

    def ignore_ranges(self, ignore: bool = True) -> None:
        """Answer 200 with the whole file to Range requests, as some proxies and CDNs do."""
        with self._state.lock:
            self._state.ignore_ranges = ignore

    def bytes_sent(self, repo_id: str, path: str) -> int:
        """Body bytes of this file sent so far, over every request."""
        with self._state.lock:
            return self._state.bytes_sent.get(f"{repo_id}/{path}", 0)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)


def _handler_for(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: tests read ``HubServer.requests`` instead."""

        def do_GET(self) -> None:
            self._dispatch(send_body=True)

        def do_HEAD(self) -> None:
            self._dispatch(send_body=False)

        def _dispatch(self, send_body: bool) -> None:
            path = urlsplit(self.path).path
            with state.lock:
                state.requests.append(
                    RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()})
                )
            if path == "/api/models":
                self._search(parse_qs(urlsplit(self.path).query).get("search", [""])[0], send_body)
            elif match := _INFO.match(path):
                kind = "" if match["kind"] == "models" else f"{match['kind']}/"
                self._repo_info(kind + match["repo"], unquote(match["rev"]), send_body)
            elif match := _RESOLVE.match(path):
                repo = (match["kind"] or "") + match["repo"]
                self._resolve(repo, unquote(match["rev"]), unquote(match["path"]), send_body)
            elif (match := _CDN.match(path)) and (repo := state.repos.get(match["repo"])) is not None:
                name = unquote(match["path"])
                if name in repo.files:
                    self._send_file(repo, name, send_body)
                else:
                    self._error(404, "EntryNotFound", "Entry not found", send_body)
            else:
                self._error(404, "RepoNotFound", "Not found", send_body)

        def _search(self, text: str, send_body: bool) -> None:
            """``GET /api/models?search=``: repos whose id contains the text, as the Hub lists them."""
            found = [
                {"_id": repo.commit[:24], "id": repo_id, "modelId": repo_id}
                for repo_id, repo in sorted(state.repos.items())
                if text.lower() in repo_id.lower()
            ]
            self._send_json(found, send_body)

        def _send_json(self, document: object, send_body: bool) -> None:
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _find(self, repo_id: str, revision: str, send_body: bool) -> HubRepo | None:
            repo = state.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", send_body)
            elif revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id", send_body, repo)
            else:
                return repo
            return None

        def _repo_info(self, repo_id: str, revision: str, send_body: bool) -> None:
            repo = self._find(repo_id, revision, send_body)
            if repo is None:
                return
            siblings = []
            for name, hub_file in sorted(repo.files.items()):
                size = hub_file.advertised_size or len(hub_file.content)
                etag = hub_file.etag if hub_file.advertised_etag is None else hub_file.advertised_etag
                sibling: dict[str, object] = {"rfilename": name, "size": size, "blobId": etag}
                if hub_file.lfs:
                    sibling["lfs"] = {"sha256": etag, "size": size, "pointerSize": 134}
                siblings.append(sibling)
            bare_id = repo_id.removeprefix("spaces/").removeprefix("datasets/")  # the Hub's ids carry no kind
            info = {
                "_id": repo.commit[:24],
                "id": bare_id,
                "modelId": bare_id,
                "sha": repo.commit,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "siblings": siblings,
            }
            self._send_json(info, send_body)

        def _resolve(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
            repo = self._find(repo_id, revision, send_body)
            if repo is None:
                return
            if repo.gated:
                # The Hub answers 401 to anonymous requests and 403 to tokens without access.
                status = 403 if "authorization" in {k.lower() for k in self.headers} else 401
                message = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
                self._error(status, "GatedRepo", message, send_body, repo)
                return
            hub_file = repo.files.get(path)
            if hub_file is None:
                self._error(404, "EntryNotFound", "Entry not found", send_body, repo)
                return
            if hub_file.lfs and state.cdn_url is not None:
                # The Hub's answer for an LFS file: its metadata, and where the bytes are.
                self.send_response(302)
                self._send_file_headers(repo, hub_file)
                self.send_header("Location", f"{state.cdn_url}/cdn/{repo_id}/{quote(path)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_file(repo, path, send_body)

        def _send_file_headers(self, repo: HubRepo, hub_file: HubFile) -> None:
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{hub_file.etag}"')
            if hub_file.lfs:
                self.send_header("X-Linked-Etag", f'"{hub_file.etag}"')
                self.send_header("X-Linked-Size", str(len(hub_file.content)))

        def _send_file(self, repo: HubRepo, path: str, send_body: bool) -> None:
            hub_file = repo.files[path]
            content = hub_file.content if hub_file.served is None else hub_file.served
            requested = _RANGE.match(self.headers.get("Range", ""))
            start = 0 if requested is None or state.ignore_ranges else int(requested.group(1))
            if requested is not None and start >= len(content) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(content)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            partial_content = requested is not None and not state.ignore_ranges
            self.send_response(206 if partial_content else 200)
            self._send_file_headers(repo, hub_file)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(content) - start))
            if partial_content:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()
            if not send_body:
                return
            with state.lock:
                cut = state.cuts.pop((repo.repo_id, path), None)
            body = memoryview(content)[start:] if cut is None else memoryview(content)[start : start + cut]
            self._write_counted(f"{repo.repo_id}/{path}", body)
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

        def _write_counted(self, key: str, body: memoryview) -> None:
            """Write in blocks, counting what reached the socket (a client may hang up part way)."""
            block = 1 << 20
            for offset in range(0, len(body), block):
                chunk = body[offset : offset + block]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                with state.lock:
                    state.bytes_sent[key] = state.bytes_sent.get(key, 0) + len(chunk)

        def _error(self, status: int, code: str, message: str, send_body: bool, repo: HubRepo | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if repo is not None:
                self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    return Handler
