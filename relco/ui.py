"""``relco ui``: the release dashboard on 127.0.0.1, served by the CLI.

The page (relco/ui_assets: one HTML, one script, one stylesheet) asks this server for ``/api/*``;
the server makes the same call to the coordinator's API through the CLI's signed client, as
``kubectl proxy`` does, so the user's AWS credentials never reach the browser and the API keeps its
IAM auth. Only pages of this server may use it: a request whose Host is not this server's address
(DNS rebinding) or whose Origin is another site is refused.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from relco.api_client import ApiClient, ApiRefused, ClientProblem

HOST = "127.0.0.1"
API_PREFIX = "/api/"
# The page's files by URL path, with their content types.
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
# The page loads only its own script and style, and no other site may frame it (its buttons act).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What the page sends the API besides its JSON body: a retried action must not act twice.
FORWARDED_HEADERS = ("Idempotency-Key",)
# The page's actions send a few hundred bytes of JSON: anything far larger is not from the page.
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def read_asset(name: str) -> bytes:
    return resources.files("relco").joinpath("ui_assets", name).read_bytes()


def json_answer(status: int, document: Any) -> Answer:
    return Answer(status, json.dumps(document).encode(), "application/json")


class DashboardServer(ThreadingHTTPServer):
    """Serves the page and forwards its API calls; ``port`` 0 takes a free port."""

    daemon_threads = True

    def __init__(self, client: ApiClient, port: int) -> None:
        super().__init__((HOST, port), DashboardRequest)
        self.client = client
        bound_port = self.server_address[1]
        # The names a browser on this machine reaches us by; anything else is another site's page
        # or a rebound DNS name.
        self.own_hosts = frozenset({f"{HOST}:{bound_port}", f"localhost:{bound_port}"})
        self.url = f"http://{HOST}:{bound_port}/"
        self._thread: threading.Thread | None = None

    def serve_in_thread(self) -> DashboardServer:
        """Serve beside other work (``relco sandbox up`` runs the dashboard next to the sandbox)."""
        self._thread = threading.Thread(target=self.serve_forever, name="relco-ui", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def forward(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        """The API's answer to the page's call ``target`` (``/api/<path>?<query>``)."""
        split = urllib.parse.urlsplit(target)
        path = "/" + split.path[len(API_PREFIX) :]
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=False))
        try:
            document = json.loads(body) if body else None
        except ValueError:
            return json_answer(HTTPStatus.BAD_REQUEST, {"Message": "the request body is not JSON"})
        try:
            answer = self.client.call(method, path, query=query, body=document, headers=headers)
        except ApiRefused as refused:
            return json_answer(refused.status, {"Message": str(refused)})
        except ClientProblem as problem:
            return json_answer(HTTPStatus.BAD_GATEWAY, {"Message": str(problem)})
        return json_answer(HTTPStatus.OK, answer)


class DashboardRequest(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if not self._from_own_page():
            return
        if self.path.startswith(API_PREFIX):
            self._send(self.server.forward("GET", self.path, b"", {}))
            return
        asset = ASSETS.get(urllib.parse.urlsplit(self.path).path)
        if asset is None:
            self._send(json_answer(HTTPStatus.NOT_FOUND, {"Message": f"no such page: {self.path}"}))
            return
        name, content_type = asset
        self._send(Answer(HTTPStatus.OK, read_asset(name), content_type))

    def do_POST(self) -> None:
        if not self._from_own_page():
            return
        if not self.path.startswith(API_PREFIX):
            self._send(json_answer(HTTPStatus.NOT_FOUND, {"Message": f"no such route: {self.path}"}))
            return
        # JSON only: a cross-site form cannot send it without a preflight this server never allows.
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._refuse_body(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        declared = self.headers.get("Content-Length") or "0"
        # Digits only: int() would take "+5" or " 5", and a negative length reads until the client
        # closes, holding a thread.
        if not declared.isascii() or not declared.isdigit():
            self._refuse_body(
                HTTPStatus.BAD_REQUEST, f"Content-Length must be a byte count, got {declared!r}"
            )
            return
        length = int(declared)
        if length > MAX_BODY_BYTES:
            self._refuse_body(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body may be at most {MAX_BODY_BYTES} bytes"
            )
            return
        body = self.rfile.read(length)
        headers = {name: self.headers[name] for name in FORWARDED_HEADERS if self.headers.get(name)}
        self._send(self.server.forward("POST", self.path, body, headers))

    def _from_own_page(self) -> bool:
        """Refuse a request addressed to another name (DNS rebinding) or sent by another site's page."""
        host = self.headers.get("Host", "")
        origin = self.headers.get("Origin")
        own_origins = {f"http://{name}" for name in self.server.own_hosts}
        if host in self.server.own_hosts and (origin is None or origin in own_origins):
            return True
        self._send(
            json_answer(
                HTTPStatus.FORBIDDEN,
                {"Message": f"refused: relco ui answers only its own page at {self.server.url}"},
            )
        )
        return False

    def _refuse_body(self, status: HTTPStatus, message: str) -> None:
        """Answer without reading the body, and close: on a kept-alive connection the unread body
        would be read as the next request."""
        self._send(json_answer(status, {"Message": message}), close=True)

    def _send(self, answer: Answer, *, close: bool = False) -> None:
        self.send_response(answer.status)
        if close:
            self.send_header("Connection", "close")  # also ends this connection's request loop
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the page polls every second, and a line per request would bury the printed URL."""
