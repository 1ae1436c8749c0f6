"""A Hugging Face Hub on loopback, answering the requests ``huggingface_hub`` makes to fetch a
model (repo info, the recursive file listing, HEAD and GET of each file), from local folders.

``GATED`` repos answer as the Hub answers a gated model asked for without access: 401 with the
``X-Error-Code: GatedRepo`` header that ``huggingface_hub`` turns into ``GatedRepoError``; a repo
it does not hold answers ``RepoNotFound``. Every request is counted.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

GATED = "gated"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # one revision, a 40-hex commit id


class FakeHub:
    def __init__(self, repos: dict[str, Path | str]):
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering: the port refuses connections from now on."""
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(f"{request.command} {path}")
        api = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.*))?$", path)
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        repo = api.group(1) if api else resolve.group(1) if resolve else None
        folder = self.repos.get(repo or "")
        if folder is None:
            return self._error(request, 404, "RepoNotFound", f"Repository Not Found for url: {path}")
        if folder == GATED:
            return self._error(request, 401, "GatedRepo", f"Access to model {repo} is restricted.")
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        names = [p.relative_to(folder).as_posix() for p in files]
        if api and api.group(2) == "revision":
            info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "gated": False,
                    "siblings": [{"rfilename": name} for name in names]}
            return self._json(request, info, body)
        if api:  # the recursive tree listing, one page
            entries = [{"type": "file", "path": name, "size": p.stat().st_size, "oid": _oid(p)}
                       for name, p in zip(names, files)]
            return self._json(request, entries, body)
        if resolve and resolve.group(3) in names:
            data = (Path(folder) / resolve.group(3)).read_bytes()
            request.send_response(200)
            request.send_header("Content-Length", str(len(data)))
            request.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            request.send_header("X-Repo-Commit", COMMIT)
            request.end_headers()
            if body:
                request.wfile.write(data)
            return None
        return self._error(request, 404, "EntryNotFound", f"Entry not found: {path}")

    @staticmethod
    def _json(request: BaseHTTPRequestHandler, value: object, body: bool) -> None:
        data = json.dumps(value).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)

    @staticmethod
    def _error(request: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("X-Error-Message", message)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
