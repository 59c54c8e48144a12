"""Debian's real Prometheus scrapes a running Linkdesk (``streamlit run server.py``) and sees a
link break: the sandbox forces the link into ``auth_expired`` through its test controls, its
signed webhook reaches the dashboard's receiver, the worker applies it, and the
``linkdesk_links{health="needs_relink"}`` series in Prometheus goes up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from linkdesk.store.models import Link
from linkdesk.webhooks.asgi import WEBHOOK_PATH
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET
from tests.sandbox_process import free_port, running_sandbox

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-the-test"
NEEDS_RELINK = 'sum(linkdesk_links{health="needs_relink"})'

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus is not installed; `make test` installs it",
)


def poll(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    """Call ``check`` until it returns something truthy (bounded), else fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def process(args: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def answers(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"{proc.args!r} exited: {log.read_text()[-2000:]}")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, expr: str) -> float | None:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_a_link_break(tmp_path: Path) -> None:
    dashboard_port = free_port()
    dashboard = f"http://localhost:{dashboard_port}"
    with running_sandbox(
        CLIENT_ID,
        CLIENT_SECRET,
        "--demo-links",
        "8",
        "--demo-webhook-url",
        f"{dashboard}{WEBHOOK_PATH}",
    ) as sandbox:
        env = {
            **os.environ,
            "MONEYKIT_CLIENT_ID": CLIENT_ID,
            "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
            "MONEYKIT_BASE_URL": sandbox,
            "MONEYKIT_CONNECT_HOST": sandbox,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'linkdesk.db'}",
            "LINKDESK_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
            "LINKDESK_WEBHOOK_ISSUER": sandbox,
            "LINKDESK_WORKER_POLL_SECONDS": "0.5",
            "LINKDESK_METRICS_TOKEN": TOKEN,
            "LINKDESK_METRICS_DB_MAX_AGE_SECONDS": "2",
        }
        for command in (("migrate",), ("sync",)):
            subprocess.run(
                [sys.executable, "-m", "linkdesk", *command],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
            )
        server_log = tmp_path / "dashboard.log"
        with process(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "server.py",
                "--server.port",
                str(dashboard_port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            server_log,
            cwd=ROOT,
            env=env,
        ) as server:
            poll(lambda: answers(f"{dashboard}/_stcore/health", server, server_log), "dashboard")
            assert httpx.get(f"{dashboard}/metrics", timeout=10).status_code == 401

            prometheus_port = free_port()
            prometheus = f"http://127.0.0.1:{prometheus_port}"
            (tmp_path / "token").write_text(TOKEN)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "linkdesk-dashboard",
                        "metrics_path": "/metrics",
                        "authorization": {
                            "type": "Bearer",
                            "credentials_file": str(tmp_path / "token"),
                        },
                        "static_configs": [{"targets": [f"localhost:{dashboard_port}"]}],
                    }
                ],
            }
            (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
            prometheus_log = tmp_path / "prometheus.log"
            with process(
                [
                    "prometheus",
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                prometheus_log,
            ) as prom:
                poll(lambda: answers(f"{prometheus}/-/ready", prom, prometheus_log), "prometheus")
                up = poll(
                    lambda: query(prometheus, 'up{job="linkdesk-dashboard"} == 1'), "a scrape"
                )
                assert up == 1
                before = poll(lambda: query(prometheus, NEEDS_RELINK) is not None, "links series")
                assert before
                needing = query(prometheus, NEEDS_RELINK)
                assert needing is not None

                # A link the store holds as connected (the sync above read every link).
                engine = sa.create_engine(env["DATABASE_URL"])
                with engine.connect() as connection:
                    healthy = (
                        connection.execute(
                            sa.select(Link.link_id).where(Link.state == "connected").limit(1)
                        )
                        .scalars()
                        .all()
                    )
                engine.dispose()
                assert healthy, "the sandbox's demo world has no connected link to break"
                httpx.post(
                    f"{sandbox}/_sandbox/links/{healthy[0]}/state",
                    json={"state": "error", "error_code": "auth_expired"},
                    timeout=10,
                ).raise_for_status()

                after = poll(
                    lambda: (
                        (value := query(prometheus, NEEDS_RELINK)) is not None
                        and value > needing
                        and value
                    ),
                    "Prometheus to see the broken link",
                )
                assert after == needing + 1
                # The webhook that carried it was counted by the receiving process.
                accepted = query(
                    prometheus, 'sum(linkdesk_webhook_deliveries_total{verdict="accepted"})'
                )
                assert accepted is not None and accepted >= 1


def test_a_worker_process_serves_its_own_metrics_port(tmp_path: Path) -> None:
    """``python -m linkdesk worker`` with ``LINKDESK_WORKER_METRICS_PORT``: its per-process
    MoneyKit counters (its discovery and reads) on its own port, behind the token."""
    with running_sandbox(CLIENT_ID, CLIENT_SECRET, "--demo-links", "4") as sandbox:
        port = free_port()
        env = {
            **os.environ,
            "MONEYKIT_CLIENT_ID": CLIENT_ID,
            "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
            "MONEYKIT_BASE_URL": sandbox,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'linkdesk.db'}",
            "LINKDESK_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
            "LINKDESK_WORKER_POLL_SECONDS": "0.5",
            "LINKDESK_WORKER_METRICS_PORT": str(port),
            "LINKDESK_METRICS_TOKEN": TOKEN,
        }
        log = tmp_path / "worker.log"
        with process(
            [sys.executable, "-m", "linkdesk", "worker"], log, cwd=ROOT, env=env
        ) as worker:
            url = f"http://127.0.0.1:{port}/metrics"

            def scraped() -> str | None:
                if worker.poll() is not None:
                    pytest.fail(f"the worker exited: {log.read_text()[-2000:]}")
                try:
                    answer = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
                except httpx.HTTPError:
                    return None
                # The listing, then the reads of the links it found: both counted by then.
                listed = 'endpoint="/links",method="GET",status="200"'
                read = 'linkdesk_moneykit_requests_total{endpoint="/links/{id}"'
                return answer.text if listed in answer.text and read in answer.text else None

            text = poll(scraped, "the worker's discovery and reads in its metrics")
            assert 'linkdesk_moneykit_requests_total{endpoint="/links/{id}"' in text
            assert httpx.get(url, timeout=5).status_code == 401
