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
from unittest import mock
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

    Routes (``revision`` is a branch given to :meth:`add_file` or its :meth:`commit`):
        - ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file, with
          ``ETag`` (the quoted sha256) and ``X-Repo-Commit``; ``Range: bytes=N-`` works.
        - ``GET /api/models/{repo_id}[/revision/{revision}]``: repository info.
        - ``GET /api/models/{repo_id}/tree/{revision}[/{folder}]``: the file listing.
        - anything unknown: 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``,
          ``RevisionNotFound`` or ``EntryNotFound``).

    Use it as a context manager; :meth:`activate` points ``huggingface_hub`` at it.
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
        return self.commit(repo_id, revision)

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
        return self.commit(repo_id, revision)

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

    def _revision(self, repo_id: str, revision: str) -> tuple[dict[str, bytes], str]:
        """``(files, commit)`` of ``revision``, a branch name or its commit hash."""
        with self._lock:
            for (repo, branch), files in self._repos.items():
                if repo == repo_id and revision in (branch, _commit_for(repo, branch)):
                    return dict(files), _commit_for(repo, branch)
            if not any(repo == repo_id for repo, _ in self._repos):
                raise _NotFound("RepoNotFound", f"Repository {repo_id} not found")
        raise _NotFound("RevisionNotFound", f"Revision {revision} not found in {repo_id}")

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
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake_hub = self  # type: ignore[attr-defined]
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
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ client side

    @contextlib.contextmanager
    def activate(self, home: str | os.PathLike[str]) -> Iterator[Path]:
        """Point ``huggingface_hub`` at this server, with a fresh cache ``home/hub``, which
        it yields.

        Sets ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE``, unsets ``HF_HUB_OFFLINE``
        and any token, and patches the matching import-time values of
        ``huggingface_hub.constants``; everything is restored on exit.
        """
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
        with _patched(env, values):
            yield cache

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Switch Hub access off as ``HF_HUB_OFFLINE=1`` does, for percepfid and for
        ``huggingface_hub`` (whose import-time flag is patched too)."""
        with _patched({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": True}):
            yield


def _set_env(values: dict[str, str | None]) -> None:
    """Set each environment variable to its value; unset those whose value is ``None``."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _patched(env: dict[str, str | None], values: dict[str, Any]) -> Iterator[None]:
    """Set environment variables and the ``huggingface_hub.constants`` this version has,
    restoring both on exit."""
    from huggingface_hub import constants

    saved = {key: os.environ.get(key) for key in env}
    present = {key: value for key, value in values.items() if hasattr(constants, key)}
    with mock.patch.multiple(constants, **present):
        try:
            _set_env(env)
            yield
        finally:
            _set_env(saved)


class _NotFound(Exception):
    """Answered as a 404 with the Hub's ``X-Error-Code``."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "percepfid-fake-hub"

    @property
    def fake_hub(self) -> FakeHub:
        return self.server.fake_hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # requests are recorded in FakeHub.requests instead of printed

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Record the request, then answer it (without the body to a HEAD)."""
        path = unquote(urlsplit(self.path).path)
        agent = self.headers.get("User-Agent", "")
        self.fake_hub.requests.append(FakeHubRequest(self.command, path, status, agent))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any) -> None:
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        raw_path = urlsplit(self.path).path
        try:
            if raw_path.startswith(_API_PREFIX):
                self._api(raw_path[len(_API_PREFIX) :])
            elif "/resolve/" in raw_path:
                self._resolve(raw_path)
            else:
                raise _NotFound("RepoNotFound", f"no route for {unquote(raw_path)}")
        except _NotFound as error:
            headers = {
                "X-Error-Code": error.code,
                "X-Error-Message": error.message,
                "Content-Type": "application/json",
                **error.headers,
            }
            self._send(404, json.dumps({"error": error.message}).encode(), headers)

    def _resolve(self, raw_path: str) -> None:
        repo_part, _, rest = raw_path.lstrip("/").partition("/resolve/")
        revision_part, _, file_part = rest.partition("/")
        repo_id, revision, filename = unquote(repo_part), unquote(revision_part), unquote(file_part)
        files, commit = self.fake_hub._revision(repo_id, revision)
        data = files.get(filename)
        if data is None:
            message = f"{filename} does not exist in {repo_id}@{revision}"
            raise _NotFound("EntryNotFound", message, {"X-Repo-Commit": commit})
        headers = {
            "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        range_header = self.headers.get("Range", "")
        # Ranges apply to GET only: HEAD answers 200 with the whole file's Content-Length.
        if self.command == "GET" and range_header.startswith("bytes="):
            start_text, _, end_text = range_header[len("bytes=") :].partition("-")
            start = int(start_text or 0)
            end = int(end_text) if end_text else len(data) - 1
            body = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers)

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
            raise _NotFound("EntryNotFound", f"unsupported API route {unquote(rest)}")
        files, commit = self.fake_hub._revision(repo_id, revision)
        if mode == "info":
            siblings = [{"rfilename": name, "size": len(files[name])} for name in sorted(files)]
            self._json(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": siblings,
                }
            )
            return
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        self._json(
            [
                {"type": "file", "path": name, "size": len(data), "oid": _git_blob_id(data)}
                for name, data in sorted(files.items())
                if name.startswith(prefix)
            ]
        )
