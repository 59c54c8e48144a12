"""Alerts: rules in the store, evaluation from what the store sees, one alert per incident,
reminders and resolution, acknowledge and silence, the outbox with retries, the channels."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from linkdesk.alerts.channels import SIGNATURE_HEADER, sign_payload
from linkdesk.alerts.outbox import MAX_ATTEMPTS, retry_delay
from linkdesk.alerts.rules import DEFAULT_RULES, validate_params
from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.settings import Settings
from linkdesk.store.models import (
    Alert,
    AlertNotification,
    AlertState,
    AuditEntry,
    Link,
    WorkerState,
)
from linkdesk.store.repository import put_named_state
from tests.alert_receivers import http_receiver, smtp_server
from tests.unit.conftest import FakeClock, FakeMoneyKit

ADMIN = Actor("root", Role.ADMIN)
SUPPORT = Actor("sam", Role.SUPPORT)
VIEWER = Actor("vic", Role.VIEWER)
BuildServices = Callable[..., Services]


@pytest.fixture
def make_services(
    core_settings: Settings, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> Iterator[BuildServices]:
    built: list[tuple[Services, Any]] = []

    def make(**overrides: Any) -> Services:
        # The worker's own evaluations are off unless a test asks: each test evaluates when
        # it means to, so that it knows which call fired or reminded.
        overrides.setdefault("alerts_enabled", False)
        settings = core_settings.model_copy(update=overrides)
        http = fake_moneykit.http_client()
        services = build_services(
            settings, http_client=http, clock=core_clock, sleep=lambda _s: None
        )
        built.append((services, http))
        return services

    yield make
    for services, http in built:
        services.close()
        http.close()


def populate(fake: FakeMoneyKit, n: int, bank: str = "bank-a", name: str = "Bank A") -> list[str]:
    ids = [f"{bank}_{i:03d}" for i in range(n)]
    for link_id in ids:
        fake.add_link(link_id, institution_id=bank, institution_name=name)
    return ids


def break_links(
    services: Services, fake: FakeMoneyKit, ids: list[str], error: str = "institution_error"
) -> None:
    """MoneyKit reports the links broken; the worker reads them into the store."""
    for link_id in ids:
        fake.links[link_id].update(state="error", error_code=error)
    sync(services, fake, ids)


def repair_links(services: Services, fake: FakeMoneyKit, ids: list[str]) -> None:
    for link_id in ids:
        fake.links[link_id].update(state="connected", error_code=None)
    sync(services, fake, ids)


def sync(services: Services, fake: FakeMoneyKit, ids: list[str]) -> None:
    for link_id in ids:
        services.worker.trigger_sync(ADMIN, link_id=link_id)
    services.worker.run_once()


def open_alerts(services: Services) -> list[Alert]:
    with services.store.read() as session:
        return list(session.scalars(sa.select(Alert).where(Alert.status == "firing")))


def outbox(services: Services) -> list[AlertNotification]:
    with services.store.read() as session:
        return list(session.scalars(sa.select(AlertNotification).order_by(AlertNotification.id)))


def only_spike(services: Services, **params: Any) -> None:
    """Turn every rule but the spike off (the others have nothing to say in these tests)."""
    for rule in services.alerts.rules():
        if rule.id != "bank_error_spike":
            services.alerts.update_rule(
                ADMIN,
                rule.id,
                enabled=False,
                params=rule.params,
                channels=rule.channels,
                renotify_minutes=rule.renotify_minutes,
            )
    spike = next(r for r in services.alerts.rules() if r.id == "bank_error_spike")
    services.alerts.update_rule(
        ADMIN,
        spike.id,
        enabled=True,
        params=spike.params | params,
        channels=["webhook", "email"],
        renotify_minutes=30,
    )


def test_a_fresh_install_has_every_default_rule(make_services: BuildServices) -> None:
    services = make_services()
    rules = {r.id: r for r in services.alerts.rules()}
    assert set(rules) == {d.id for d in DEFAULT_RULES}
    assert all(r.enabled and r.params == validate_params(r.kind, r.params) for r in rules.values())
    # Idempotent: a second process starting adds nothing and changes nothing.
    make_services().alerts.ensure_default_rules()
    assert {r.id: r for r in services.alerts.rules()} == rules


def test_rule_edits_are_for_admins_checked_and_audited(make_services: BuildServices) -> None:
    services = make_services()
    rule = next(r for r in services.alerts.rules() if r.id == "needs_relink")
    with pytest.raises(PermissionDenied):
        services.alerts.update_rule(
            SUPPORT, rule.id, enabled=False, params={}, channels=[], renotify_minutes=60
        )
    with pytest.raises(ValueError, match="between"):
        services.alerts.update_rule(
            ADMIN,
            rule.id,
            enabled=True,
            params={"max_links": -1},
            channels=[],
            renotify_minutes=60,
        )
    with pytest.raises(ValueError, match="unknown parameter"):
        services.alerts.update_rule(
            ADMIN, rule.id, enabled=True, params={"max_linkz": 3}, channels=[], renotify_minutes=60
        )
    with pytest.raises(ValueError, match="channel"):
        services.alerts.update_rule(
            ADMIN, rule.id, enabled=True, params={}, channels=["pager"], renotify_minutes=60
        )
    changed = services.alerts.update_rule(
        ADMIN,
        rule.id,
        enabled=True,
        params={"max_links": 7, "growth_per_hour": 3},
        channels=["email"],
        renotify_minutes=15,
        reason="quieter at night",
    )
    assert changed.params == {"max_links": 7, "growth_per_hour": 3}
    assert changed.updated_by == "root"
    with services.store.read() as session:
        entry = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "alert.rule")
        ).one()
    assert entry.actor == "root" and entry.reason == "quieter at night"
    recorded = json.loads(entry.detail or "{}")
    assert recorded["before"]["params"]["max_links"] == 100
    assert recorded["after"]["params"]["max_links"] == 7


def test_links_first_seen_broken_are_no_spike(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit
) -> None:
    """Discovery of a store (a first start, a restore) sees many links already in error: nobody
    knows when they broke, so neither the alert nor the Overview's banks in trouble count them."""
    ids = populate(fake_moneykit, 20)
    for link_id in ids[:15]:
        fake_moneykit.links[link_id].update(state="error", error_code="auth_expired")
    services = make_services()
    services.worker.run_once()  # discovery: 15 links first seen in error
    only_spike(services, min_links=5, factor=3.0)
    assert services.alerts.evaluate().fired == 0
    assert services.overview.snapshot(max_age=0).banks == []
    # A link that was seen connected and breaks now does count.
    break_links(services, fake_moneykit, ids[15:16])
    [bank] = services.overview.snapshot(max_age=0).banks
    assert (bank.institution_id, bank.broke, bank.recovered) == ("bank-a", 1, 0)


def test_a_bank_spike_fires_once_reminds_and_resolves_after_recovery(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    steady = populate(fake_moneykit, 40)
    other = populate(fake_moneykit, 10, "bank-b", "Bank B")
    with http_receiver() as hook:
        services = make_services(
            alert_webhook_url=hook.url, alert_webhook_secret=SecretStr("s3cret-for-tests")
        )
        services.worker.run_once()  # discovery: every link connected
        only_spike(services, min_links=5, factor=3.0)
        assert services.alerts.evaluate().fired == 0

        break_links(services, fake_moneykit, steady[:12])
        break_links(services, fake_moneykit, other[:1])  # one link of another bank: no spike
        report = services.alerts.evaluate()
        assert report.fired == 1
        [alert] = open_alerts(services)
        assert alert.key == "bank-a" and alert.value == 12
        assert alert.detail["links"] == {"institution": "bank-a"}
        # A second process evaluating the same store finds the incident already open.
        assert make_services().alerts.evaluate().fired == 0
        assert len(open_alerts(services)) == 1
        assert [(n.channel, n.kind) for n in outbox(services)] == [("webhook", "fired")]

        # Still broken half an hour later: one reminder, from whichever process gets there first.
        core_clock.advance(31 * 60)
        break_links(services, fake_moneykit, steady[12:20])  # the wave goes on
        assert services.alerts.evaluate().reminded == 1
        assert make_services().alerts.evaluate().reminded == 0
        assert [n.kind for n in outbox(services)] == ["fired", "reminder"]

        repair_links(services, fake_moneykit, steady[:20])
        assert services.alerts.evaluate().resolved == 1
        assert open_alerts(services) == []
        assert [n.kind for n in outbox(services)] == ["fired", "reminder", "resolved"]

        assert services.alert_runner.dispatcher.deliver_due() == 3
        kinds = [json.loads(p.body)["kind"] for p in hook.posts]
        assert kinds == ["fired", "reminder", "resolved"]
        for post in hook.posts:
            stamp, digest = (
                part.split("=", 1)[1] for part in post.headers[SIGNATURE_HEADER].split(",")
            )
            expected = hmac.new(
                b"s3cret-for-tests", stamp.encode() + b"." + post.body, hashlib.sha256
            ).hexdigest()
            assert hmac.compare_digest(digest, expected)
    history = [h.action for h in reversed(services.alerts.history())]
    assert history == ["fired", "notified", "notified", "resolved"]


def test_two_evaluators_at_once_open_one_alert(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit
) -> None:
    ids = populate(fake_moneykit, 20)
    first = make_services()
    first.worker.run_once()
    only_spike(first, min_links=5)
    break_links(first, fake_moneykit, ids[:10])
    replicas = [make_services() for _ in range(4)]
    start = threading.Barrier(len(replicas))
    fired: list[int] = []

    def evaluate(services: Services) -> None:
        start.wait()
        fired.append(services.alerts.evaluate().fired)

    threads = [threading.Thread(target=evaluate, args=(s,)) for s in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(fired) == 1
    assert len(open_alerts(first)) == 1
    with first.store.read() as session:
        buckets = session.execute(sa.text("SELECT sum(broke) FROM alert_bank_buckets")).scalar()
    assert buckets == 10  # every state change rolled up once, however many evaluators ran


def test_acknowledged_alerts_are_not_reminded_and_silences_need_a_reason(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 20)
    with http_receiver() as hook:
        services = make_services(
            alert_webhook_url=hook.url, alert_webhook_secret=SecretStr("k" * 16)
        )
        services.worker.run_once()
        only_spike(services, min_links=5)
        break_links(services, fake_moneykit, ids[:10])
        services.alerts.evaluate()
        [alert] = open_alerts(services)
        with pytest.raises(PermissionDenied):
            services.alerts.acknowledge(VIEWER, alert.id)
        services.alerts.acknowledge(SUPPORT, alert.id)
        with pytest.raises(ValueError, match="not firing unacknowledged"):
            services.alerts.acknowledge(ADMIN, alert.id)
        core_clock.advance(31 * 60)
        break_links(services, fake_moneykit, ids[10:18])  # still going on, past the reminder
        report = services.alerts.evaluate()
        assert report.firing == 1 and report.reminded == 0

        with pytest.raises(ValueError, match="why"):
            services.alerts.silence(SUPPORT, alert.id, minutes=60, reason="  ")
        services.alerts.silence(SUPPORT, alert.id, minutes=60, reason="bank says 1 h")
        repair_links(services, fake_moneykit, ids[:18])
        assert services.alerts.evaluate().resolved == 1
        # Silenced: resolved, but nobody is told (the fired message went before the silence).
        assert [n.kind for n in outbox(services)] == ["fired"]
        # The silence covers the next incident of the same bank within the hour too.
        core_clock.advance(20 * 60)  # the recoveries leave the window
        break_links(services, fake_moneykit, ids[:10])
        assert services.alerts.evaluate().fired == 1
        assert [n.kind for n in outbox(services)] == ["fired"]
    actions = [h.action for h in reversed(services.alerts.history())]
    assert actions[:4] == ["fired", "notified", "acknowledged", "silenced"]
    with services.store.read() as session:
        audited = set(session.scalars(sa.select(AuditEntry.action)))
    assert {"alert.acknowledge", "alert.silence"} <= audited


def test_failed_deliveries_retry_with_backoff_then_arrive(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 20)
    with http_receiver(fail_first=2) as hook:
        services = make_services(
            alert_webhook_url=hook.url, alert_webhook_secret=SecretStr("k" * 16)
        )
        services.worker.run_once()
        only_spike(services, min_links=5)
        break_links(services, fake_moneykit, ids[:10])
        services.alerts.evaluate()
        dispatcher = services.alert_runner.dispatcher
        assert dispatcher.deliver_due() == 0
        [note] = outbox(services)
        assert note.status == "pending" and note.attempts == 1 and note.last_error == "HTTP 503"
        assert services.alerts.notifications()[0].last_error == "HTTP 503"  # shown on the page
        assert dispatcher.deliver_due() == 0  # not due before its backoff
        core_clock.advance(retry_delay(1).total_seconds())
        assert dispatcher.deliver_due() == 0
        core_clock.advance(retry_delay(2).total_seconds())
        assert dispatcher.deliver_due() == 1
        [note] = outbox(services)
        assert note.status == "sent" and note.attempts == 3 and len(hook.posts) == 1
    assert retry_delay(1).total_seconds() == 30 and retry_delay(2).total_seconds() == 60
    assert retry_delay(50).total_seconds() == 30 * 60


def test_a_channel_that_never_answers_is_given_up_and_shown(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 20)
    with http_receiver(fail_first=100) as hook:
        services = make_services(
            alert_webhook_url=hook.url, alert_webhook_secret=SecretStr("k" * 16)
        )
        services.worker.run_once()
        only_spike(services, min_links=5)
        break_links(services, fake_moneykit, ids[:10])
        services.alerts.evaluate()
        for _ in range(MAX_ATTEMPTS):
            services.alert_runner.dispatcher.deliver_due()
            core_clock.advance(3600)
        [note] = outbox(services)
        assert note.status == "failed" and note.attempts == MAX_ATTEMPTS
        assert [n.status for n in services.alerts.notifications()] == ["failed"]
        assert hook.posts == []


def test_email_and_slack_channels_deliver_over_real_protocols(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit
) -> None:
    ids = populate(fake_moneykit, 20, "bank-x", "Bank <X> & Co")
    with smtp_server() as smtp, http_receiver() as slack:
        services = make_services(
            alert_smtp_host=smtp.host,
            alert_smtp_port=smtp.port,
            alert_smtp_starttls=False,
            alert_email_to="ops@example.test, oncall@example.test",
            alert_slack_webhook_url=SecretStr(slack.url),
        )
        services.worker.run_once()
        only_spike(services, min_links=5)
        services.alerts.update_rule(
            ADMIN,
            "bank_error_spike",
            enabled=True,
            params={"min_links": 5},
            channels=["email", "slack", "webhook"],  # webhook is not configured: skipped
            renotify_minutes=30,
        )
        break_links(services, fake_moneykit, ids[:10])
        services.alerts.evaluate()
        assert sorted(n.channel for n in outbox(services)) == ["email", "slack"]
        assert services.alert_runner.dispatcher.deliver_due() == 2
        [mail] = smtp.inbox.messages
        assert mail["Subject"].startswith("[Linkdesk FIRING] Bank <X> & Co: 10 links broke")
        assert smtp.inbox.recipients == [["ops@example.test", "oncall@example.test"]]
        [post] = slack.posts
        text = json.loads(post.body)["text"]
        assert "Bank &lt;X&gt; &amp; Co" in text and "<X>" not in text


def _rule_only(services: Services, rule_id: str, **params: Any) -> None:
    for rule in services.alerts.rules():
        services.alerts.update_rule(
            ADMIN,
            rule.id,
            enabled=rule.id == rule_id,
            params=rule.params | (params if rule.id == rule_id else {}),
            channels=rule.channels,
            renotify_minutes=rule.renotify_minutes,
        )


def test_needs_relink_fires_on_count_and_on_growth(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 30)
    services = make_services()
    services.worker.run_once()
    _rule_only(services, "needs_relink", max_links=100, growth_per_hour=5)
    break_links(services, fake_moneykit, ids[:3], error="auth_expired")
    assert services.alerts.evaluate().fired == 0  # 3 links, no hour of history yet
    core_clock.advance(3600)
    break_links(services, fake_moneykit, ids[3:12], error="auth_expired")
    assert services.alerts.evaluate().fired == 1
    [alert] = open_alerts(services)
    assert alert.value == 12 and alert.detail["links"] == {"health": "needs_relink"}
    _rule_only(services, "needs_relink", max_links=10, growth_per_hour=1000)
    core_clock.advance(7200)
    services.alerts.evaluate()
    assert len(open_alerts(services)) == 1  # still above 10 links


def test_suspect_discovery_listing_fires_while_the_worker_says_so(
    make_services: BuildServices,
) -> None:
    services = make_services()
    _rule_only(services, "discovery_suspect")
    assert services.alerts.evaluate().fired == 0
    suspect = {"at": "2025-01-01T12:00:00+00:00", "listed": 3, "known": 900, "missing": 897}
    with services.store.write() as session:
        put_named_state(session, "discovery_suspect", suspect, services.links._clock())
    assert services.alerts.evaluate().fired == 1
    [alert] = open_alerts(services)
    assert alert.value == 897 and "3 of 900" in alert.title
    with services.store.write() as session:
        session.execute(
            sa.update(WorkerState).where(WorkerState.name == "discovery_suspect").values(value={})
        )
    assert services.alerts.evaluate().resolved == 1


def test_disabling_a_rule_resolves_its_alerts(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit
) -> None:
    ids = populate(fake_moneykit, 20)
    services = make_services()
    services.worker.run_once()
    only_spike(services, min_links=5)
    break_links(services, fake_moneykit, ids[:10])
    services.alerts.evaluate()
    _rule_only(services, "stuck_links")
    assert services.alerts.evaluate().resolved == 1
    assert services.alerts.history()[0].detail == "rule disabled"


def test_the_worker_evaluates_on_its_interval_and_never_fails_a_round_for_alerts(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 20)
    services = make_services(alerts_enabled=True, alerts_evaluate_seconds=60)
    services.worker.run_once()
    only_spike(services, min_links=5)
    for link_id in ids[:10]:
        fake_moneykit.links[link_id].update(state="error", error_code="institution_error")
        services.worker.trigger_sync(ADMIN, link_id=link_id)
    services.worker.run_once()  # inside the interval of the first evaluation: not yet
    assert open_alerts(services) == []
    core_clock.advance(61)
    services.worker.run_once()
    assert len(open_alerts(services)) == 1
    # A store the rules cannot read (here: their rollup table moved away) leaves the round
    # itself intact.
    with services.store.write() as session:
        session.execute(sa.text("ALTER TABLE alert_bank_buckets RENAME TO alert_buckets_away"))
    try:
        core_clock.advance(61)
        report = services.worker.run_once()
        assert not report.paused
    finally:
        with services.store.write() as session:
            session.execute(sa.text("ALTER TABLE alert_buckets_away RENAME TO alert_bank_buckets"))
    with services.store.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Link)) == 20


def test_signature_helper_matches_the_documented_scheme() -> None:
    body = b'{"kind":"fired"}'
    header = sign_payload("secret", body, 1700000000)
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_the_running_relink_count_follows_the_store_without_counting_it(
    make_services: BuildServices, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    ids = populate(fake_moneykit, 30)
    services = make_services()
    services.worker.run_once()
    evaluator = services.alerts.evaluator

    def stored_count() -> int:
        with services.store.read() as session:
            return int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Link)
                    .where(Link.state == "error", Link.error_code == "auth_expired")
                )
                or 0
            )

    def kept() -> AlertState | None:
        with services.store.read() as session:
            return session.get(AlertState, "needs_relink_count")

    evaluator.rollup.roll_up()
    assert evaluator.rollup.relink_count() == 0  # the first call counts, and keeps the count
    first = kept()
    assert first is not None
    break_links(services, fake_moneykit, ids[:9], error="auth_expired")
    repair_links(services, fake_moneykit, ids[:2])
    break_links(services, fake_moneykit, ids[20:22], error="institution_error")  # not relink
    # Not rolled up yet: the count adds the changes since the kept position.
    assert evaluator.rollup.relink_count() == stored_count() == 7
    evaluator.rollup.roll_up()
    assert evaluator.rollup.relink_count() == 7
    now_kept = kept()
    assert now_kept is not None and now_kept.number == 7
    assert now_kept.updated_at == first.updated_at  # moved by the rollup, not recounted
    core_clock.advance(2 * 3600)
    assert evaluator.rollup.relink_count() == 7
    recounted = kept()
    assert recounted is not None and recounted.updated_at > first.updated_at
