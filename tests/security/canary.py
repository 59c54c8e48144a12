"""A loopback HTTP server that records every request it gets: the proof that nothing reached it.

Attack tests point hostile URLs (remote images, redirects, internal addresses) at a canary on a
free 127.0.0.1 port, then assert its log is empty. Routes can answer with a body, a status or a
redirect, so the same server plays an allowed image host too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Canary:
    origin: str
    port: int
    hits: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    routes: dict[str, Answer] = field(default_factory=dict)

    def url(self, path: str = "/pixel") -> str:
        return f"{self.origin}{path}"


PIXEL_SVG = b"<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/>"


@contextmanager
def running_canary(host: str = "127.0.0.1") -> Iterator[Canary]:
    canary = Canary(origin="", port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with lock:
                canary.hits.append(f"{self.command} {self.path}")
                canary.headers.append({k.lower(): v for k, v in self.headers.items()})
            answer = canary.routes.get(self.path.split("?")[0]) or Answer(
                body=PIXEL_SVG, headers={"Content-Type": "image/svg+xml"}
            )
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet test output

    server = ThreadingHTTPServer((host, 0), Handler)
    canary.port = int(server.server_address[1])
    canary.origin = f"http://{host}:{canary.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield canary
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
