"""A tiny fake Hugging Face Hub on 127.0.0.1, for testing download code offline."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class FakeHubRequest:
    """One request the fake Hub answered: method, path (unquoted), status code and the
    client's ``User-Agent``."""

    method: str
    path: str
    status: int
    user_agent: str = ""


def _commit_for(repo_id: str, revision: str) -> str:
    # A fixed 40-hex "commit" per (repo, revision): stable across runs and servers.
    return hashlib.sha1(f"percepfid-fake-hub:{repo_id}@{revision}".encode()).hexdigest()


class FakeHub:
    """A threaded HTTP server on 127.0.0.1 that answers the Hub requests ``huggingface_hub``
    makes: ``hf_hub_download``, ``snapshot_download``, ``from_pretrained`` and offline
    reloads from the cache behave as against huggingface.co. It serves only what the test
    put in it, and records every request (:attr:`requests`), so a test can check that a call
    made none.

    Routes (``revision`` is a branch given to :meth:`add_file` or the commit it returned):
        - ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file, with
          ``ETag`` (the quoted sha256) and ``X-Repo-Commit``; ``Range: bytes=N-`` works.
        - ``GET /api/models/{repo_id}[/revision/{revision}]``: repository info.
        - ``GET /api/models/{repo_id}/tree/{revision}[/{folder}]``: the file listing.
        - anything unknown: 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``,
          ``RevisionNotFound`` or ``EntryNotFound``).

    Use it as a context manager; :meth:`activate` points ``huggingface_hub`` at it::

        with FakeHub() as hub, hub.activate(tmp_path):       # HF_ENDPOINT and HF_HOME
            hub.add_file("org/repo", "weights.bin", b"0123")
            path = hf_hub_download("org/repo", "weights.bin")
            with hub.offline():                               # HF_HUB_OFFLINE=1
                assert hf_hub_download("org/repo", "weights.bin") == path
    """

    def __init__(self) -> None:
        # (repo_id, revision) -> {filename: bytes}
        self._repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.requests: list[FakeHubRequest] = []

    def add_file(self, repo_id: str, filename: str, data: bytes, revision: str = "main") -> str:
        """Serve ``data`` as ``filename`` of ``repo_id`` at ``revision`` (replacing any file
        of that name). Returns the commit hash the server reports for that revision."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"data must be bytes; got {type(data).__name__}")
        filename = filename.replace(os.sep, "/").lstrip("/")
        with self._lock:
            self._repos.setdefault((repo_id, revision), {})[filename] = bytes(data)
        return _commit_for(repo_id, revision)

    def add_folder(
        self, repo_id: str, folder: str | os.PathLike[str], revision: str = "main"
    ) -> str:
        """Serve every file under ``folder`` (recursively, by relative path). Returns the
        commit hash of ``revision``."""
        root = Path(folder)
        if not root.is_dir():
            raise NotADirectoryError(f"folder {root} does not exist or is not a folder")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.add_file(
                    repo_id, path.relative_to(root).as_posix(), path.read_bytes(), revision
                )
        return _commit_for(repo_id, revision)

    def requests_for(
        self, filename: str | None = None, method: str | None = None
    ) -> list[FakeHubRequest]:
        """The recorded requests, optionally only those for a file name or method."""
        return [
            r
            for r in list(self.requests)
            if (filename is None or r.path.endswith("/" + filename))
            and (method is None or r.method == method)
        ]

    def _revision(self, repo_id: str, revision: str) -> tuple[dict[str, bytes], str]:
        """``(files, commit)`` of ``revision``, a branch name or its commit hash."""
        with self._lock:
            for (repo, branch), files in self._repos.items():
                if repo == repo_id and revision in (branch, _commit_for(repo, branch)):
                    return dict(files), _commit_for(repo, branch)
            if not any(repo == repo_id for repo, _ in self._repos):
                raise _NotFound("RepoNotFound", f"Repository {repo_id} not found")
        raise _NotFound("RevisionNotFound", f"Revision {revision} not found in {repo_id}")

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``; only while the server runs."""
        if self._server is None:
            raise RuntimeError("the fake Hub is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        """Start serving on a free port of 127.0.0.1 (what ``__enter__`` does)."""
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake_hub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop the server (what ``__exit__`` does)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def activate(self, home: str | os.PathLike[str]) -> Iterator[Path]:
        """Point ``huggingface_hub`` at this server with a fresh cache ``home/hub`` (yielded):
        sets ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE``, unsets ``HF_HUB_OFFLINE`` and
        any token, and patches the matching import-time values of
        ``huggingface_hub.constants``; everything is restored on exit."""
        home = Path(home)
        cache = home / "hub"
        cache.mkdir(parents=True, exist_ok=True)
        endpoint = self.endpoint
        no_proxy = ",".join(
            p for p in (os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost") if p
        )
        env = {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(cache),
            **dict.fromkeys(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")),
            "HUGGING_FACE_HUB_TOKEN": None,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            **dict.fromkeys(("NO_PROXY", "no_proxy"), no_proxy),
        }
        values = {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home),
            **dict.fromkeys(("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"), str(cache)),
            **dict.fromkeys(("HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE"), str(home / "assets")),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        with _patched(env, values):
            yield cache

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Switch Hub access off as ``HF_HUB_OFFLINE=1`` does, for percepfid and for
        ``huggingface_hub`` (whose import-time flag is patched too)."""
        with _patched({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": True}):
            yield


@contextlib.contextmanager
def _patched(env: dict[str, str | None], values: dict[str, Any]) -> Iterator[None]:
    """Set (``None``: unset) environment variables and the ``huggingface_hub.constants``
    this version has, restoring both on exit."""
    from huggingface_hub import constants

    present = {key: value for key, value in values.items() if hasattr(constants, key)}
    with mock.patch.multiple(constants, **present), mock.patch.dict(os.environ):
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield


class _NotFound(Exception):
    """Answered as a 404 with the Hub's ``X-Error-Code``."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


_REPO = r"/(?P<repo_id>[^/]+(?:/[^/]+)?)"
# (route, handler method): matched against the quoted path, groups unquoted
_ROUTES = [
    (re.compile(f"/api/models{_REPO}(?:/revision/(?P<revision>.+))?"), "_info"),
    (re.compile(f"/api/models{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<folder>.*))?"), "_tree"),
    (re.compile(f"{_REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)"), "_resolve"),
]

_Answer = tuple[int, Any, dict[str, str]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "percepfid-fake-hub"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # requests are recorded in FakeHub.requests instead of printed

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        """Route the request, then record and answer it (without the body to a HEAD)."""
        hub: FakeHub = self.server.fake_hub  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        try:
            for pattern, method in _ROUTES:
                if match := pattern.fullmatch(path):
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v}
                    status, body, headers = getattr(self, method)(hub, **groups)
                    break
            else:
                code = "EntryNotFound" if path.startswith("/api/models/") else "RepoNotFound"
                raise _NotFound(code, f"no route for {unquote(path)}")
        except _NotFound as error:
            headers = {"X-Error-Code": error.code, "X-Error-Message": error.message}
            status, body, headers = 404, {"error": error.message}, {**headers, **error.headers}
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        agent = self.headers.get("User-Agent", "")
        hub.requests.append(FakeHubRequest(self.command, unquote(path), status, agent))
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def _resolve(self, hub: FakeHub, repo_id: str, revision: str, filename: str) -> _Answer:
        files, commit = hub._revision(repo_id, revision)
        if filename not in files:
            message = f"{filename} does not exist in {repo_id}@{revision}"
            raise _NotFound("EntryNotFound", message, {"X-Repo-Commit": commit})
        data = files[filename]
        headers = {
            "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        requested = self.headers.get("Range", "")
        # Ranges apply to GET only: HEAD answers 200 with the whole file's Content-Length.
        if self.command != "GET" or not requested.startswith("bytes="):
            return 200, data, headers
        start_text, _, end_text = requested[len("bytes=") :].partition("-")
        start, end = int(start_text or 0), int(end_text) if end_text else len(data) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, data[start : end + 1], headers

    def _info(self, hub: FakeHub, repo_id: str, revision: str = "main") -> _Answer:
        files, commit = hub._revision(repo_id, revision)
        siblings = [{"rfilename": name, "size": len(files[name])} for name in sorted(files)]
        info = {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings}
        return 200, {**info, "private": False, "disabled": False, "gated": False, "tags": []}, {}

    def _tree(self, hub: FakeHub, repo_id: str, revision: str, folder: str = "") -> _Answer:
        files, _ = hub._revision(repo_id, revision)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        tree = []
        for name, data in sorted(files.items()):
            if name.startswith(prefix):
                oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
                tree.append({"type": "file", "path": name, "size": len(data), "oid": oid})
        return 200, tree, {}
