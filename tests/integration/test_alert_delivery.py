"""Done when: in demo mode, a large bank's OAuth outage fires a spike alert that arrives at a
loopback webhook receiver (HMAC-signed) and at an in-process SMTP server (aiosmtpd), and a
resolved message follows once the bank recovers.

Nothing here writes states or alerts into the store: the sandbox plays the scenario, its signed
webhooks reach Linkdesk's receiver over HTTP, the worker applies them and evaluates the rules on
its interval, and the alert thread delivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from linkdesk.alerts.channels import SIGNATURE_HEADER
from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.settings import Settings
from linkdesk.webhooks.asgi import WEBHOOK_PATH
from tests.alert_receivers import HttpReceiver, SmtpServer, http_receiver, smtp_server
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET, serving_receiver
from tests.sandbox_process import free_port, running_sandbox

PRESENTER = Actor("pat.presenter", Role.ADMIN)
WORLD_LINKS = 240
SPEED = 10.0
SECRET = "alert-hook-secret-for-tests"


def poll(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def posted(hook: HttpReceiver, kind: str) -> list[dict[str, Any]]:
    with hook.lock:
        bodies = [json.loads(p.body) for p in hook.posts]
    return [b for b in bodies if b["kind"] == kind]


def mailed(smtp: SmtpServer, prefix: str) -> list[str]:
    return [m["Subject"] for m in smtp.inbox.messages if m["Subject"].startswith(prefix)]


@pytest.fixture(scope="module")
def receiver_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sandbox_url(receiver_port: int) -> Iterator[str]:
    hook = f"http://localhost:{receiver_port}{WEBHOOK_PATH}"
    try:
        with running_sandbox(
            CLIENT_ID, CLIENT_SECRET, "--demo-links", "10", "--demo-webhook-url", hook
        ) as url:
            yield url
    except RuntimeError as failure:
        pytest.fail(str(failure))


def test_an_outage_fires_a_spike_alert_to_webhook_and_email_then_resolves(
    sandbox_url: str, receiver_port: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("alerts")
    with http_receiver() as hook, smtp_server() as smtp:
        settings = Settings(
            moneykit_base_url=sandbox_url,
            moneykit_connect_host=sandbox_url,
            moneykit_client_id=CLIENT_ID,
            moneykit_client_secret=SecretStr(CLIENT_SECRET),
            database_url=f"sqlite:///{folder / 'linkdesk.db'}",
            signing_key_file=str(folder / "signing.key"),
            webhook_issuer=sandbox_url,
            demo_mode=True,
            demo_links=WORLD_LINKS,
            worker_poll_seconds=0.2,
            alerts_evaluate_seconds=1,
            alert_webhook_url=hook.url,
            alert_webhook_secret=SecretStr(SECRET),
            alert_smtp_host=smtp.host,
            alert_smtp_port=smtp.port,
            alert_smtp_starttls=False,
            alert_email_to="ops@example.test",
        )
        services: Services = build_services(settings, worker_id="alerts-integration")
        stop = threading.Event()
        worker = threading.Thread(target=services.worker.run_forever, args=(stop,), daemon=True)
        try:
            with serving_receiver(services, receiver_port):
                report = services.demo.reset(PRESENTER)
                assert report.links == WORLD_LINKS
                worker.start()
                # The demo's past (rolled up into the baseline) fires no spike by itself: the
                # alert below comes from the scenario.
                services.alerts.evaluate()
                firing = services.alerts.alerts(status="firing")
                assert not [a for a in firing if a.rule_id == "bank_error_spike"]
                run = services.demo.start_scenario(PRESENTER, "oauth_outage", speed=SPEED)
                bank = run.institution_id

                fired = poll(lambda: posted(hook, "fired"), "the fired webhook")
                spike = next(b for b in fired if b["rule"] == "bank_error_spike")
                assert spike["key"] == bank and spike["status"] == "firing"
                subject = poll(lambda: mailed(smtp, "[Linkdesk FIRING]"), "the fired email")[0]
                assert "links broke" in subject

                poll(lambda: posted(hook, "resolved"), "the resolved webhook")
                poll(lambda: mailed(smtp, "[Linkdesk RESOLVED]"), "the resolved email")
                [alert] = [
                    a
                    for a in services.alerts.alerts(status="resolved")
                    if a.rule_id == "bank_error_spike"
                ]
                # The page links the alert to the Links view of that bank.
                assert alert.links_query == {"institution": bank}
        finally:
            stop.set()
            worker.join(timeout=30)
            services.close()

    for post in hook.posts:
        stamp, digest = (p.split("=", 1)[1] for p in post.headers[SIGNATURE_HEADER].split(","))
        expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + post.body, hashlib.sha256)
        assert hmac.compare_digest(digest, expected.hexdigest())
    resolved = [b for b in posted(hook, "resolved") if b["rule"] == "bank_error_spike"]
    assert [b["key"] for b in resolved] == [bank]
    assert resolved[0]["resolved_at"] is not None
