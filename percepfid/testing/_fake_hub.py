"""A tiny fake Hugging Face Hub on 127.0.0.1, for testing download code offline.

The real ``huggingface_hub`` client runs end to end against it: ``hf_hub_download``,
``snapshot_download``, ``PyTorchModelHubMixin.from_pretrained`` and offline reloads from
the cache behave as they do against huggingface.co. It serves only what the test put in
it, and records every request so a test can check that a call made none.

Example::

    from percepfid.testing import FakeHub
    from huggingface_hub import hf_hub_download

    with FakeHub() as hub, hub.activate(tmp_path):       # HF_ENDPOINT and HF_HOME
        hub.add_file("org/repo", "weights.bin", b"0123")
        path = hf_hub_download("org/repo", "weights.bin")
        with hub.offline():                               # HF_HUB_OFFLINE=1
            assert hf_hub_download("org/repo", "weights.bin") == path
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "FakeHubRequest"]

_API_PREFIX = "/api/models/"


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


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A threaded HTTP server that answers the Hub requests ``huggingface_hub`` makes.

    Routes:
        - ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file, with
          ``Content-Length``, ``ETag`` (the quoted sha256 of the bytes) and
          ``X-Repo-Commit``; ``Range: bytes=N-`` is honoured.
        - ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}``:
          repository info with ``sha`` and ``siblings``.
        - ``GET /api/models/{repo_id}/tree/{revision}[/{folder}]``: the file listing
          ``snapshot_download`` reads.
        - anything unknown: 404 with ``X-Error-Code`` ``RepoNotFound``,
          ``RevisionNotFound`` or ``EntryNotFound``, as the Hub sends.

    ``revision`` may be a branch name given to :meth:`add_file` or the commit hash the
    server reports for it. Use it as a context manager; :meth:`activate` points
    ``huggingface_hub`` at it.
    """

    def __init__(self) -> None:
        # (repo_id, revision) -> {filename: bytes}
        self._repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[FakeHubRequest] = []

    # ------------------------------------------------------------------ content

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
        commit = _commit_for(repo_id, revision)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                commit = self.add_file(
                    repo_id, path.relative_to(root).as_posix(), path.read_bytes(), revision
                )
        return commit

    def remove_file(self, repo_id: str, filename: str, revision: str = "main") -> None:
        """Stop serving a file."""
        with self._lock:
            self._repos.get((repo_id, revision), {}).pop(filename, None)

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The 40-hex commit hash the server reports for ``revision`` of ``repo_id``."""
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

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(branch, files) for a revision given as a branch name or as a commit hash."""
        with self._lock:
            files = self._repos.get((repo_id, revision))
            if files is not None:
                return revision, dict(files)
            for (repo, branch), files in self._repos.items():
                if repo == repo_id and _commit_for(repo, branch) == revision:
                    return branch, dict(files)
        return None

    def _has_repo(self, repo_id: str) -> bool:
        with self._lock:
            return any(repo == repo_id for repo, _ in self._repos)

    # ------------------------------------------------------------------ server

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
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="percepfid-fake-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the server (what ``__exit__`` does)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ client side

    @contextlib.contextmanager
    def activate(self, home: str | os.PathLike[str]) -> Iterator[Path]:
        """Point ``huggingface_hub`` at this server, with a fresh cache under ``home``.

        Sets ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` (``home/hub``), unsets
        ``HF_HUB_OFFLINE`` and any token (``HF_TOKEN``), and, because ``huggingface_hub``
        reads these at import time, patches the matching values in
        ``huggingface_hub.constants`` (endpoint, URL template, cache and token paths,
        offline flag). Everything is restored on exit, even after an error.

        Yields:
            The cache folder (``home/hub``).
        """
        from huggingface_hub import constants

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
            "HF_HUB_OFFLINE": None,
            "TRANSFORMERS_OFFLINE": None,
            "HF_TOKEN": None,
            "HUGGING_FACE_HUB_TOKEN": None,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
        values = {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(cache),
            "HUGGINGFACE_HUB_CACHE": str(cache),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        with _patched_env(env), _patched_attrs(constants, values):
            yield cache

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Switch Hub access off as ``HF_HUB_OFFLINE=1`` does, for percepfid and for
        ``huggingface_hub`` (whose import-time flag is patched too)."""
        from huggingface_hub import constants

        with (
            _patched_env({"HF_HUB_OFFLINE": "1"}),
            _patched_attrs(constants, {"HF_HUB_OFFLINE": True}),
        ):
            yield


def _set_env(values: dict[str, str | None]) -> None:
    """Set each environment variable to its value; unset those whose value is ``None``."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _patched_env(values: dict[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


_MISSING = object()


@contextlib.contextmanager
def _patched_attrs(module: Any, values: dict[str, Any]) -> Iterator[None]:
    # Only attributes this huggingface_hub version has are patched (robust across versions).
    saved = {key: getattr(module, key, _MISSING) for key in values}
    try:
        for key, value in values.items():
            if saved[key] is not _MISSING:
                setattr(module, key, value)
        yield
    finally:
        for key, value in saved.items():
            if value is not _MISSING:
                setattr(module, key, value)


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "percepfid-fake-hub"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # requests are recorded in FakeHub.requests instead of printed

    # -------------------------------------------------------------- plumbing

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        include_body: bool = True,
    ) -> None:
        # Recorded before answering, so the record exists once the client has its answer.
        self._record(status)
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if include_body and body:
            self.wfile.write(body)

    def _record(self, status: int) -> None:
        path = unquote(urlsplit(self.path).path)
        agent = self.headers.get("User-Agent", "")
        self.fake_hub.requests.append(FakeHubRequest(self.command, path, status, agent))

    def _error(self, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {
            "X-Error-Code": code,
            "X-Error-Message": message,
            "Content-Type": "application/json",
        }
        headers.update(extra or {})
        self._send(404, body, headers, include_body=self.command != "HEAD")

    def _json(self, payload: Any) -> None:
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _revision(self, repo_id: str, revision: str) -> tuple[dict[str, bytes], str] | None:
        """``(files, commit)`` of ``revision`` (a branch or its commit hash), or ``None``
        once 404 ``RepoNotFound`` or ``RevisionNotFound`` has been answered."""
        if not self.fake_hub._has_repo(repo_id):
            self._error("RepoNotFound", f"Repository {repo_id} not found")
            return None
        found = self.fake_hub._lookup(repo_id, revision)
        if found is None:
            self._error("RevisionNotFound", f"Revision {revision} not found in {repo_id}")
            return None
        branch, files = found
        return files, _commit_for(repo_id, branch)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._route()

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._route()

    # -------------------------------------------------------------- routes

    def _route(self) -> None:
        raw_path = urlsplit(self.path).path
        if raw_path.startswith(_API_PREFIX):
            self._api(raw_path[len(_API_PREFIX) :])
        elif "/resolve/" in raw_path:
            self._resolve(raw_path)
        else:
            self._error("RepoNotFound", f"no route for {unquote(raw_path)}")

    def _resolve(self, raw_path: str) -> None:
        repo_part, _, rest = raw_path.lstrip("/").partition("/resolve/")
        revision_part, _, file_part = rest.partition("/")
        repo_id, revision, filename = unquote(repo_part), unquote(revision_part), unquote(file_part)
        found = self._revision(repo_id, revision)
        if found is None:
            return
        files, commit = found
        data = files.get(filename)
        if data is None:
            self._error(
                "EntryNotFound",
                f"{filename} does not exist in {repo_id}@{revision}",
                {"X-Repo-Commit": commit},
            )
            return
        headers = {
            "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        range_header = self.headers.get("Range", "")
        if self.command == "GET" and range_header.startswith("bytes="):
            start_text, _, end_text = range_header[len("bytes=") :].partition("-")
            start = int(start_text or 0)
            end = int(end_text) if end_text else len(data) - 1
            body = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        # A HEAD answer is the GET answer without the body (Content-Length included);
        # ranges apply to GET only, so HEAD always answers 200 with the whole file's length.
        self._send(status, body, headers, include_body=self.command != "HEAD")

    def _api(self, rest: str) -> None:
        # rest: {repo_id}[/revision/{rev}] or {repo_id}/tree/{rev}[/{folder}]
        parts = rest.split("/")
        repo_id = "/".join(unquote(p) for p in parts[:2])
        tail = parts[2:]
        if not tail:
            mode, revision, folder = "info", "main", ""
        elif tail[0] == "revision" and len(tail) >= 2:
            mode, revision, folder = "info", unquote("/".join(tail[1:])), ""
        elif tail[0] == "tree" and len(tail) >= 2:
            mode, revision, folder = "tree", unquote(tail[1]), unquote("/".join(tail[2:]))
        else:
            self._error("EntryNotFound", f"unsupported API route {unquote(rest)}")
            return
        found = self._revision(repo_id, revision)
        if found is None:
            return
        files, commit = found
        if mode == "info":
            self._json(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": [
                        {"rfilename": name, "size": len(files[name])} for name in sorted(files)
                    ],
                }
            )
            return
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        self._json(
            [
                {
                    "type": "file",
                    "path": name,
                    "size": len(files[name]),
                    "oid": _git_blob_id(files[name]),
                }
                for name in sorted(files)
                if name.startswith(prefix)
            ]
        )
