"""Start the real sandbox (`python -m sandbox`) on a free localhost port, for tests over HTTP.

Contract and integration tests share this: the sandbox always runs as its own process, as
MoneyKit would, and is addressed as `http://localhost:<port>` (never `127.0.0.1`: the Connect UI
host must equal the browser's origin byte for byte).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_sandbox(client_id: str, client_secret: str, *extra_args: str) -> Iterator[str]:
    """Yield the URL of a sandbox accepting these credentials; stop it afterwards.

    Raises RuntimeError with the end of the sandbox's output when it does not come up.
    """
    env = {**os.environ, "MONEYKIT_CLIENT_ID": client_id, "MONEYKIT_CLIENT_SECRET": client_secret}
    with tempfile.TemporaryFile() as log:
        # A port picked here can be taken before the child binds it (the sandbox binds two:
        # its own and OAuth Bank's); try a few.
        for _attempt in range(3):
            port = free_port()
            url = f"http://localhost:{port}"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "--host",
                    "localhost",
                    "--port",
                    str(port),
                    "--bank-port",
                    str(free_port()),
                    "--log-level",
                    "warning",
                    *extra_args,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if _healthy(url, proc):
                try:
                    yield url
                finally:
                    _stop(proc)
                return
            _stop(proc)
        log.seek(0)
        output = log.read().decode("utf-8", "replace")[-2000:]
    raise RuntimeError(f"sandbox did not start; last output:\n{output}")
