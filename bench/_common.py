"""Helpers shared by the benchmark scripts (not a benchmark itself: it prints nothing)."""

from __future__ import annotations

import math
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "linkdesk_bench_client"
CLIENT_SECRET = "linkdesk_bench_secret"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values (no interpolation: always a measured sample)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_line(label: str, seconds: Sequence[float]) -> str:
    ordered = sorted(seconds)
    parts = [f"{name} {percentile(ordered, q) * 1000:.2f} ms" for name, q in _PERCENTILES]
    return f"{label}: " + ", ".join(parts) + f" (n={len(ordered)})"


_PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


def machine_line() -> str:
    # The load average says whether other work shared the CPUs during the run.
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cpu, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average {load}"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        port: int = sock.getsockname()[1]
        return port


class SandboxProcess:
    """``python -m sandbox`` on a free localhost port, stopped by :meth:`stop`."""

    def __init__(self, *, demo_links: int, extra_args: Sequence[str] = ()) -> None:
        self.demo_links = demo_links
        self.extra_args = list(extra_args)
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(os.devnull)

    def start(self, log_path: Path, *, timeout_s: float = 60.0) -> None:
        env = {
            **os.environ,
            "MONEYKIT_CLIENT_ID": CLIENT_ID,
            "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
        }
        self._log = log_path
        # A port can be taken between choosing it and binding it; a few tries settle that race.
        for _attempt in range(3):
            self.port = free_port()
            self.url = f"http://localhost:{self.port}"
            with log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "sandbox",
                        "--host",
                        "localhost",
                        "--port",
                        str(self.port),
                        "--bank-port",
                        str(free_port()),
                        "--demo-links",
                        str(self.demo_links),
                        "--log-level",
                        "warning",
                        *self.extra_args,
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_healthy(timeout_s):
                return
            self.stop()
        tail = log_path.read_text("utf-8", "replace")[-1500:]
        raise RuntimeError(f"sandbox did not start; last output:\n{tail}")

    def _wait_healthy(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/_sandbox/health", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ThreadedServer:
    """An ASGI app served by uvicorn on a real localhost port, in a daemon thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="localhost", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="bench-uvicorn", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._server.started:
            raise RuntimeError("the webhook receiver did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class RequestCounter:
    """Counts the responses an ``httpx.Client`` gets, by endpoint (ids folded) and status.

    Pass :meth:`hook` as a response event hook; :meth:`snapshot` is safe while threads send.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()

    def hook(self, response: httpx.Response) -> None:
        key = (
            endpoint_of(response.request.method, response.request.url.path),
            response.status_code,
        )
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> Counter[tuple[str, int]]:
        with self._lock:
            return Counter(self._counts)


_LINK_PATH = re.compile(r"^/links/[^/]+")
_INSTITUTION_PATH = re.compile(r"^/institutions/[^/]+")


def endpoint_of(method: str, path: str) -> str:
    """``GET /links/{id}/accounts`` for ``GET /links/mk_123/accounts`` (ids folded away)."""
    folded = path if path.startswith("/links/import") else _LINK_PATH.sub("/links/{id}", path)
    folded = _INSTITUTION_PATH.sub("/institutions/{id}", folded)
    if folded.startswith("/assets/"):
        folded = "/assets/…"
    return f"{method} {folded}"
