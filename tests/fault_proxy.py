"""A real HTTP hop in front of a server that can be told to fail the way a registry does on a
cluster: an ingress answering 503 while the server restarts, a server that dies (connections
dropped before it answers), or one that acts and dies before its answer arrives.

Used by the registry-server tests to fail one chosen request (say, the one that creates a model
version) in a run that otherwise talks to a real ``mlflow server``.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["pass", "status", "drop", "lose"]
# hop-by-hop headers are the proxy's own; the body is re-sent with its length
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclasses.dataclass(frozen=True)
class Fault:
    """``status``: answer ``status`` without asking the server; ``drop``: close the connection
    without an answer (the server is gone); ``lose``: forward, then close without passing the
    answer on (the server acted, its answer never arrived). Only requests whose path contains
    ``on`` are failed; ``once`` heals the proxy after the first; ``onwards`` fails every request
    after the first too (the server died there)."""

    mode: Mode = "pass"
    on: str = ""
    status: int = 503
    once: bool = False
    onwards: bool = False
    started: bool = False


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.fault = Fault()
        self.failed: list[str] = []  # "METHOD path" of every request failed on purpose
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(
        self, mode: Mode, on: str = "", *, status: int = 503, once: bool = False,
        onwards: bool = False,
    ) -> None:  # fmt: skip
        with self._lock:
            self.fault = Fault(mode, on, status, once, onwards)

    def heal(self) -> None:
        self.fail("pass")

    def _take(self, method: str, path: str) -> Fault:
        """The fault for this request (``pass`` when none), consumed when it fails once."""
        with self._lock:
            fault = self.fault
            if fault.mode == "pass" or (fault.on not in path and not fault.started):
                return Fault()
            self.failed.append(f"{method} {path}")
            if fault.once:
                self.fault = Fault()
            elif fault.onwards:
                self.fault = dataclasses.replace(fault, started=True)
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self) -> None:
                body = self._body()
                fault = proxy._take(self.command, self.path)
                if fault.mode == "drop":
                    self.close_connection = True
                    return
                if fault.mode == "status":
                    text = f"{fault.status} from the fault proxy\n".encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                if fault.mode == "lose":
                    self.close_connection = True
                    return
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

        return Handler
