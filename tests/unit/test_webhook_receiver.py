"""Webhook receiver: every attempt recorded, duplicates dropped, events applied once, in order."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from linkdesk.bootstrap import Services, build_services
from linkdesk.services.webhook_apply import ApplyReport
from linkdesk.settings import Settings
from linkdesk.store.models import Link, SyncJob, WebhookDelivery, WebhookEvent, WorkerState
from linkdesk.store.sync_jobs import PRIORITY_WEBHOOK, link_job_id
from linkdesk.webhooks.asgi import webhook_route
from linkdesk.webhooks.receiver import WebhookReceiver
from linkdesk.webhooks.verify import Reason
from tests.unit.conftest import FakeClock, FakeMoneyKit, WebhookSigner


@pytest.fixture
def wired(fake_moneykit: FakeMoneyKit, signer: WebhookSigner, core_services: Services) -> Services:
    fake_moneykit.signer = signer
    fake_moneykit.add_link("mk_1", state="error", error_code="auth_expired")
    core_services.discovery.sync_all()
    return core_services


def deliveries(services: Services) -> list[WebhookDelivery]:
    with services.store.read() as session:
        return list(session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))


def events(services: Services) -> list[WebhookEvent]:
    with services.store.read() as session:
        return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def stored_link(services: Services, link_id: str) -> Link:
    with services.store.read() as session:
        link = session.get(Link, link_id)
        assert link is not None
        return link


class TestReceive:
    def test_a_genuine_delivery_is_recorded_and_queued(self, wired, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        result = wired.webhooks.receive(body, headers)
        assert (result.status_code, result.verdict, result.reason) == (202, "accepted", Reason.OK)
        (delivery,) = deliveries(wired)
        assert (delivery.verdict, delivery.reason, delivery.attempt) == ("accepted", "ok", 1)
        assert delivery.payload is not None and delivery.payload["state"] == "connected"
        assert delivery.event_timestamp is not None
        (event,) = events(wired)
        assert (event.status, event.link_id) == ("pending", "mk_1")
        assert stored_link(wired, "mk_1").last_webhook_at is not None

    def test_a_forged_delivery_is_recorded_without_its_body(self, wired, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        result = wired.webhooks.receive(body.replace(b"connected", b"connectee"), headers)
        assert (result.status_code, result.reason) == (401, Reason.BODY_MISMATCH)
        assert deliveries(wired) == []  # tallied in memory; written in the background
        assert wired.webhooks.flush_refusals() == 1
        (delivery,) = deliveries(wired)
        assert (delivery.verdict, delivery.reason, delivery.payload) == (
            "rejected",
            "body_mismatch",
            None,
        )
        assert events(wired) == []

    def test_a_missing_signature_is_refused(self, wired, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        del headers["MoneyKit-Signature"]
        result = wired.webhooks.receive(body, headers)
        assert (result.status_code, result.reason) == (401, Reason.MISSING_SIGNATURE)

    def test_header_names_are_case_insensitive(self, wired, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        lowered = {k.lower(): v for k, v in headers.items()}
        assert wired.webhooks.receive(body, lowered).verdict == "accepted"

    def test_retries_of_one_delivery_are_duplicates_but_every_attempt_is_recorded(
        self, wired, signer, core_clock
    ):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-1")
        first = wired.webhooks.receive(body, headers)
        retry = dict(headers, **{"MoneyKit-Delivery-Attempt": "2"})
        second = wired.webhooks.receive(body, retry)
        assert first.verdict == "accepted"
        assert (second.status_code, second.verdict, second.reason) == (
            200,
            "duplicate",
            Reason.DUPLICATE,
        )
        assert [(d.verdict, d.attempt) for d in deliveries(wired)] == [
            ("accepted", 1),
            ("duplicate", 2),
        ]
        assert len(events(wired)) == 1

    def test_same_idempotency_key_under_a_new_delivery_token_is_a_duplicate(
        self, wired, signer, core_clock
    ):
        a = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-1", token="dt-a")
        b = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-1", token="dt-b")
        assert wired.webhooks.receive(*a).verdict == "accepted"
        assert wired.webhooks.receive(*b).verdict == "duplicate"
        assert len(events(wired)) == 1

    def test_concurrent_retries_queue_one_event(self, wired, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-race")
        results: list[str] = []
        barrier = threading.Barrier(6)

        def send() -> None:
            barrier.wait()
            results.append(wired.webhooks.receive(body, headers).verdict)

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["accepted"] + ["duplicate"] * 5
        assert len(events(wired)) == 1
        assert len(deliveries(wired)) == 6

    def test_a_verified_but_unreadable_payload_is_refused(self, wired, signer, core_clock):
        body = b'{"hello": "world"}'
        headers = {"MoneyKit-Signature": signer.signature(body, iat=core_clock.now)}
        result = wired.webhooks.receive(body, headers)
        assert (result.status_code, result.reason) == (400, Reason.BAD_PAYLOAD)

    def test_keys_unreachable_asks_moneykit_to_retry(self, wired, signer, core_clock):
        signer.jwks_down = True
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        result = wired.webhooks.receive(body, headers)
        assert (result.status_code, result.reason) == (503, Reason.JWKS_UNAVAILABLE)


class TestDuplicatesDecidedByTheStore:
    """The unique constraints, not a look-up before the insert, decide what is a duplicate."""

    @pytest.fixture
    def other_process(
        self,
        wired: Services,
        core_settings: Settings,
        fake_moneykit: FakeMoneyKit,
        core_clock: FakeClock,
    ) -> Iterator[Services]:
        """A second receiver on the same database with its own engine: another replica."""
        http = fake_moneykit.http_client()
        services = build_services(
            core_settings,
            http_client=http,
            clock=core_clock,
            sleep=lambda _s: None,
            migrate_schema=False,
            worker_id="replica-2",
        )
        yield services
        services.close()
        http.close()

    def test_an_event_queued_by_another_process_is_a_duplicate_here(
        self, wired, other_process, signer, core_clock
    ):
        first = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-x", token="dt-1")
        again = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-x", token="dt-2")
        assert other_process.webhooks.receive(*first).verdict == "accepted"
        result = wired.webhooks.receive(*again)
        assert (result.status_code, result.verdict, result.reason) == (
            200,
            "duplicate",
            Reason.DUPLICATE,
        )
        accepted, duplicate = deliveries(wired)
        assert (accepted.verdict, accepted.delivery_token) == ("accepted", "dt-1")
        assert accepted.payload is not None
        # The copy is evidence of the attempt: which event, which link, but no second payload.
        assert (
            duplicate.verdict,
            duplicate.reason,
            duplicate.delivery_token,
            duplicate.idempotency_key,
            duplicate.link_id,
            duplicate.payload,
        ) == ("duplicate", "duplicate", "dt-2", "idem-x", "mk_1", None)
        (event,) = events(wired)
        assert (event.delivery_token, event.status) == ("dt-1", "pending")

    def test_a_delivery_token_seen_before_is_a_duplicate_even_under_a_new_key(
        self, wired, signer, core_clock
    ):
        a = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-a", token="dt-same")
        b = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-b", token="dt-same")
        assert wired.webhooks.receive(*a).verdict == "accepted"
        assert wired.webhooks.receive(*b).verdict == "duplicate"
        assert [e.idempotency_key for e in events(wired)] == ["idem-a"]
        assert [d.verdict for d in deliveries(wired)] == ["accepted", "duplicate"]

    def test_a_duplicate_leaves_the_link_and_the_queued_event_alone(
        self, wired, signer, core_clock
    ):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-1")
        wired.webhooks.receive(body, headers)
        seen_at = stored_link(wired, "mk_1").last_webhook_at
        (queued,) = events(wired)
        core_clock.advance(30)
        retry = dict(headers, **{"MoneyKit-Delivery-Attempt": "2"})
        assert wired.webhooks.receive(body, retry).verdict == "duplicate"
        assert stored_link(wired, "mk_1").last_webhook_at == seen_at
        (after,) = events(wired)
        assert (after.id, after.received_at, after.status) == (
            queued.id,
            queued.received_at,
            "pending",
        )

    def test_two_processes_receiving_one_event_at_once_queue_it_once(
        self, wired, other_process, signer, core_clock
    ):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, key="idem-race")
        receivers = [wired.webhooks, other_process.webhooks] * 3
        results: list[str] = []
        barrier = threading.Barrier(len(receivers))

        def send(receiver: WebhookReceiver) -> None:
            barrier.wait()
            results.append(receiver.receive(body, headers).verdict)

        threads = [threading.Thread(target=send, args=(r,)) for r in receivers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["accepted"] + ["duplicate"] * 5
        assert len(events(wired)) == 1
        assert sorted(d.verdict for d in deliveries(wired)) == ["accepted"] + ["duplicate"] * 5


class TestApply:
    def test_applying_rereads_the_link_instead_of_trusting_the_payload(
        self, wired, signer, core_clock, fake_moneykit
    ):
        # The payload says error, but MoneyKit now says connected: MoneyKit's answer wins.
        fake_moneykit.links["mk_1"].update(state="connected", error_code=None)
        body, headers = signer.delivery(
            link_id="mk_1", iat=core_clock.now, state="error", error="auth_expired"
        )
        wired.webhooks.receive(body, headers)
        report = wired.webhook_apply.apply_pending()
        assert report.applied == 1
        link = stored_link(wired, "mk_1")
        assert (link.state, link.error_code) == ("connected", None)
        assert [e.status for e in events(wired)] == ["applied"]

    def test_the_shared_totals_follow_an_applied_event_at_once(
        self, wired, signer, core_clock, fake_moneykit
    ):
        # A relink's webhook often lands before the agent's Done; the relink then moves nothing,
        # so the event must move the totals a page shows, without waiting for a recount.
        counted = wired.totals.health_summary(max_age=3600)
        assert counted.errors.get("auth_expired") == 1
        fake_moneykit.links["mk_1"].update(state="connected", error_code=None)
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        wired.webhooks.receive(body, headers)
        assert wired.webhook_apply.apply_pending().applied == 1
        shown = wired.totals.ready_health_summary(max_age=3600)
        assert shown is not None and shown.computed_at == counted.computed_at  # not recounted
        assert shown.errors.get("auth_expired", 0) == 0
        assert shown.total == counted.total
        # The same link read again (the relink's own completion) leaves the totals as they are.
        with wired.totals.writing("mk_1"):
            pass
        assert wired.totals.ready_health_summary(max_age=3600) == shown

    def test_an_event_is_applied_once(self, wired, signer, core_clock, fake_moneykit):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        wired.webhooks.receive(body, headers)
        before = fake_moneykit.calls["GET /links/mk_1"]
        wired.webhook_apply.apply_pending()
        wired.webhook_apply.apply_pending()
        wired.webhooks.receive(body, headers)  # a late retry after applying
        wired.webhook_apply.apply_pending()
        assert fake_moneykit.calls["GET /links/mk_1"] == before + 1

    def test_two_appliers_at_once_apply_each_event_once(
        self, wired, signer, core_clock, fake_moneykit
    ):
        for i in range(8):
            fake_moneykit.add_link(f"mk_p{i}")
        wired.discovery.sync_all()
        for i in range(8):
            body, headers = signer.delivery(link_id=f"mk_p{i}", iat=core_clock.now)
            wired.webhooks.receive(body, headers)
        before = sum(fake_moneykit.calls[f"GET /links/mk_p{i}"] for i in range(8))
        barrier = threading.Barrier(3)
        reports = []

        def apply() -> None:
            barrier.wait()
            reports.append(
                wired.webhook_apply.apply_pending(worker=threading.current_thread().name)
            )

        threads = [threading.Thread(target=apply) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.applied for r in reports) == 8
        after = sum(fake_moneykit.calls[f"GET /links/mk_p{i}"] for i in range(8))
        assert after - before == 8
        assert {e.status for e in events(wired)} == {"applied"}

    def test_an_older_event_never_overwrites_newer_state(
        self, wired, signer, core_clock, fake_moneykit
    ):
        t0 = core_clock.now
        newer = signer.delivery(link_id="mk_1", iat=t0, timestamp=t0, key="new", state="connected")
        older = signer.delivery(
            link_id="mk_1",
            iat=t0,
            timestamp=t0 - timedelta(seconds=30),
            key="old",
            state="error",
            error="auth_expired",
        )
        wired.webhooks.receive(*newer)
        # MoneyKit becomes unreachable (the keys are cached), so payloads are all there is:
        # order must come from the events' own timestamps, not from when they arrived.
        fake_moneykit.unreachable = True
        wired.webhook_apply.apply_pending()
        assert stored_link(wired, "mk_1").state == "connected"
        wired.webhooks.receive(*older)  # arrives late, after a MoneyKit retry
        report = wired.webhook_apply.apply_pending()
        assert report.stale_ignored == 1
        link = stored_link(wired, "mk_1")
        assert (link.state, link.error_code) == ("connected", None)
        statuses = {e.idempotency_key: e.status for e in events(wired)}
        assert statuses == {"new": "applied", "old": "stale_ignored"}

    def test_events_queued_together_are_applied_oldest_first(
        self, wired, signer, core_clock, fake_moneykit
    ):
        t0 = core_clock.now  # after the initial sync
        first, second = t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)
        core_clock.advance(10)  # both happened before they arrive
        wired.webhooks.receive(
            *signer.delivery(link_id="mk_1", iat=t0, timestamp=second, key="b", state="connected")
        )
        wired.webhooks.receive(
            *signer.delivery(
                link_id="mk_1",
                iat=t0,
                timestamp=first,
                key="a",
                state="error",
                error="institution_error",
            )
        )
        fake_moneykit.unreachable = True
        wired.webhook_apply.apply_pending()
        link = stored_link(wired, "mk_1")
        assert (link.state, link.error_code) == ("connected", None)
        with wired.store.read() as session:
            changes = session.execute(
                sa.text(
                    "SELECT to_state, to_error, source FROM link_state_changes "
                    "WHERE link_id='mk_1' ORDER BY id"
                )
            ).all()
        assert [tuple(r) for r in changes] == [
            ("error", "auth_expired", "sync"),
            ("error", "institution_error", "webhook"),
            ("connected", None, "webhook"),
        ]

    def test_an_event_older_than_the_last_read_is_stale(
        self, wired, signer, core_clock, fake_moneykit
    ):
        old = core_clock.now - timedelta(seconds=30)  # before the initial sync read the link
        wired.webhooks.receive(
            *signer.delivery(link_id="mk_1", iat=core_clock.now, timestamp=old, state="connected")
        )
        calls = fake_moneykit.calls["GET /links/mk_1"]
        assert wired.webhook_apply.apply_pending().stale_ignored == 1
        assert fake_moneykit.calls["GET /links/mk_1"] == calls
        assert stored_link(wired, "mk_1").state == "error"

    def test_every_outcome_of_a_pass_is_recorded_stale_ones_included(
        self, wired, signer, core_clock, fake_moneykit
    ):
        # Stale outcomes are written in a batch with the next outcome that changed something,
        # or at the end of the pass: each event still ends with its own status and detail.
        old = core_clock.now - timedelta(seconds=30)
        for i in range(3):
            wired.webhooks.receive(
                *signer.delivery(link_id="mk_1", iat=core_clock.now, timestamp=old, key=f"old-{i}")
            )
        wired.webhooks.receive(*signer.delivery(link_id="mk_1", iat=core_clock.now, key="new"))
        for i in range(2):
            wired.webhooks.receive(
                *signer.delivery(
                    link_id="mk_1", iat=core_clock.now, timestamp=old, key=f"old-late-{i}"
                )
            )
        report = wired.webhook_apply.apply_pending()
        assert (report.applied, report.stale_ignored) == (1, 5)
        by_key = {e.idempotency_key: e for e in events(wired)}
        assert by_key["new"].status == "applied"
        assert by_key["new"].detail is not None and by_key["new"].detail.startswith("re-read")
        stale = [e for key, e in by_key.items() if key != "new"]
        assert {e.status for e in stale} == {"stale_ignored"}
        assert all(e.applied_at is not None and e.claimed_until is None for e in stale)
        assert all(e.detail and e.detail.startswith("older than") for e in stale)
        assert wired.webhook_apply.apply_pending() == ApplyReport()

    def test_institutions_are_read_once_across_passes(
        self, wired, signer, core_clock, fake_moneykit
    ):
        fake_moneykit.add_link("mk_2")
        wired.discovery.sync_all()
        before = fake_moneykit.calls["GET /institutions/bank-a"]
        for link_id in ("mk_1", "mk_2"):
            wired.webhooks.receive(*signer.delivery(link_id=link_id, iat=core_clock.now))
            assert wired.webhook_apply.apply_pending().applied == 1
        assert fake_moneykit.calls["GET /links/mk_2"] == 2  # both passes re-read their link
        assert fake_moneykit.calls["GET /institutions/bank-a"] - before == 1

    def test_unreachable_moneykit_queues_the_link_for_the_worker(
        self, wired, signer, core_clock, fake_moneykit
    ):
        wired.webhooks.receive(
            *signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        )
        fake_moneykit.unreachable = True
        report = wired.webhook_apply.apply_pending()
        assert report.queued_for_worker == 1
        with wired.store.read() as session:
            job = session.get(SyncJob, link_job_id("mk_1"))
            assert job is not None and job.priority == PRIORITY_WEBHOOK

    def test_a_webhook_for_an_unknown_link_brings_it_in(
        self, wired, signer, core_clock, fake_moneykit
    ):
        fake_moneykit.add_link("mk_new", tags=["customer:cust_9"])
        wired.webhooks.receive(*signer.delivery(link_id="mk_new", iat=core_clock.now))
        wired.webhook_apply.apply_pending()
        assert stored_link(wired, "mk_new").customer_id == "cust_9"


class TestHttpRoute:
    @pytest.fixture
    def http(self, wired: Services) -> TestClient:
        return TestClient(Starlette(routes=[webhook_route(wired.webhooks)]))

    def test_a_genuine_post_is_accepted(self, http, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        response = http.post("/webhooks/moneykit", content=body, headers=headers)
        assert response.status_code == 202
        assert response.json() == {"ok": True, "reason": "ok"}

    def test_a_forged_post_is_refused_without_echoing_the_body(self, http, signer, core_clock):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="secret-ish")
        headers["MoneyKit-Signature"] = "garbage"
        response = http.post("/webhooks/moneykit", content=body, headers=headers)
        assert response.status_code == 400
        assert response.json() == {"ok": False, "reason": "malformed"}
        assert b"secret-ish" not in response.content

    def test_an_oversized_body_is_refused(self, http, wired):
        big = b"x" * (wired.webhooks.max_body_bytes + 1)
        response = http.post("/webhooks/moneykit", content=big)
        assert (response.status_code, response.json()["reason"]) == (413, "too_large")

    def test_only_post_is_routed(self, http):
        assert http.get("/webhooks/moneykit").status_code == 405


def test_clock_fixture_is_shared(core_clock: FakeClock, wired: Services):
    # The receiver judges signature age with the services' clock, not the wall clock.
    assert wired.webhooks._clock is core_clock


# -- refusals are counted, not stored without bound ----------------------------------------------


@pytest.fixture
def small_sample(
    core_settings: Settings, fake_moneykit: FakeMoneyKit, signer: WebhookSigner, core_clock
) -> Iterator[Services]:
    fake_moneykit.signer = signer
    fake_moneykit.add_link("mk_1")
    http = fake_moneykit.http_client()
    services = build_services(
        core_settings.model_copy(
            update={"webhook_refused_sample": 10, "webhook_delivery_retention_days": 30}
        ),
        http_client=http,
        clock=core_clock,
        sleep=lambda _s: None,
    )
    services.discovery.sync_all()
    yield services
    services.close()
    http.close()


class TestRefusalsAreCounted:
    def test_a_flood_of_unsigned_requests_keeps_a_bounded_sample_and_counts_every_one(
        self, small_sample, signer, core_clock
    ):
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        del headers["MoneyKit-Signature"]
        http = TestClient(Starlette(routes=[webhook_route(small_sample.webhooks)]))
        for _ in range(150):
            assert http.post("/webhooks/moneykit", content=body, headers=headers).status_code == 401
        for _ in range(50):
            forged = signer.delivery(link_id="mk_1", iat=core_clock.now)[1]
            small_sample.webhooks.receive(body + b" ", forged)  # body no longer matches
        small_sample.webhooks.flush_refusals()
        small_sample.webhooks.receive(body, headers)  # one more, not written yet

        rows = deliveries(small_sample)
        assert len(rows) == 10 and {r.verdict for r in rows} == {"rejected"}
        assert all(r.payload is None for r in rows)
        assert small_sample.webhooks.refusal_counts() == {
            "body_mismatch": 50,
            "missing_signature": 151,
        }
        small_sample.webhooks.flush_refusals()
        assert len(deliveries(small_sample)) == 10
        with small_sample.store.read() as session:
            stored = session.get(WorkerState, "webhook_refusals")
            assert stored is not None and stored.value["counts"] == {
                "body_mismatch": 50,
                "missing_signature": 151,
            }

    def test_too_large_bodies_are_counted(self, small_sample):
        http = TestClient(Starlette(routes=[webhook_route(small_sample.webhooks)]))
        big = b"x" * (small_sample.webhooks.max_body_bytes + 1)
        assert http.post("/webhooks/moneykit", content=big).status_code == 413
        assert small_sample.webhooks.refusal_counts() == {"too_large": 1}

    def test_deliveries_older_than_the_retention_are_deleted(
        self, small_sample, signer, core_clock
    ):
        old = signer.delivery(link_id="mk_1", iat=core_clock.now, key="old")
        assert small_sample.webhooks.receive(*old).verdict == "accepted"
        small_sample.webhook_apply.apply_pending()
        core_clock.advance(31 * 24 * 3600)
        new = signer.delivery(link_id="mk_1", iat=core_clock.now, key="new")
        assert small_sample.webhooks.receive(*new).verdict == "accepted"
        small_sample.webhooks.flush_refusals()
        assert [d.idempotency_key for d in deliveries(small_sample)] == ["new"]
        # Applied events go too; a pending one stays whatever its age.
        assert [e.idempotency_key for e in events(small_sample)] == ["new"]


class TestForgedWebhookWhileTheStoreIsLocked:
    def test_a_forged_webhook_is_refused_without_waiting_for_the_store(
        self, wired, signer, core_clock
    ):
        forged_body, forged_headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        forged_headers["MoneyKit-Signature"] = signer.signature(b"another body", iat=core_clock.now)
        wired.webhooks.receive(*signer.delivery(link_id="mk_1", iat=core_clock.now))  # keys cached
        results: list[int] = []
        with holding_write_lock(wired):
            sender = threading.Thread(
                target=lambda: results.append(
                    wired.webhooks.receive(forged_body, forged_headers).status_code
                ),
                daemon=True,
            )
            sender.start()
            # A bound so a regression fails instead of hanging; the assertion is on the status.
            sender.join(timeout=60)
        assert results == [401]
        assert wired.webhooks.refusal_counts() == {"body_mismatch": 1}


@contextmanager
def holding_write_lock(services: Services) -> Iterator[None]:
    """Another connection holds the store's write lock (SQLite) or every table (PostgreSQL)."""
    engine = sa.create_engine(services.store.engine.url, poolclass=sa.pool.NullPool)
    connection = engine.connect()
    try:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            transaction = connection.begin()
            names = ", ".join(
                f'"{n}"' for n in sa.inspect(connection).get_table_names() if n != "audit_log"
            )
            connection.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("ROLLBACK")
        else:
            transaction.rollback()
        connection.close()
        engine.dispose()


class TestEventTimeCannotBePushedIntoTheFuture:
    def test_an_event_stamped_ahead_does_not_hide_later_genuine_events(
        self, wired, signer, core_clock, fake_moneykit
    ):
        ahead = core_clock.now + timedelta(minutes=15)
        fake_moneykit.links["mk_1"].update(state="connected", error_code=None)
        # Validly signed now (iat within the skew), but stamped 15 minutes ahead.
        wired.webhooks.receive(
            *signer.delivery(
                link_id="mk_1", iat=core_clock.now, timestamp=ahead, key="ahead", state="connected"
            )
        )
        assert wired.webhook_apply.apply_pending().applied == 1
        link = stored_link(wired, "mk_1")
        assert link.state == "connected"
        assert link.state_as_of is not None and link.state_as_of <= core_clock.now

        core_clock.advance(60)
        fake_moneykit.links["mk_1"].update(state="error", error_code="auth_expired")
        wired.webhooks.receive(
            *signer.delivery(
                link_id="mk_1",
                iat=core_clock.now,
                key="genuine",
                state="error",
                error="auth_expired",
            )
        )
        report = wired.webhook_apply.apply_pending()
        assert (report.applied, report.stale_ignored) == (1, 0)
        link = stored_link(wired, "mk_1")
        assert (link.state, link.error_code) == ("error", "auth_expired")

    def test_a_state_time_already_pushed_ahead_is_not_trusted(
        self, wired, signer, core_clock, fake_moneykit
    ):
        with wired.store.write() as session:
            session.execute(
                sa.update(Link)
                .where(Link.link_id == "mk_1")
                .values(state_as_of=core_clock.now + timedelta(minutes=15))
            )
        fake_moneykit.links["mk_1"].update(state="connected", error_code=None)
        wired.webhooks.receive(
            *signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        )
        assert wired.webhook_apply.apply_pending().applied == 1
        link = stored_link(wired, "mk_1")
        assert link.state == "connected"
        assert link.state_as_of is not None and link.state_as_of <= core_clock.now


def test_a_404_on_the_reread_keeps_the_link(wired, signer, core_clock, fake_moneykit):
    del fake_moneykit.links["mk_1"]
    wired.webhooks.receive(*signer.delivery(link_id="mk_1", iat=core_clock.now))
    assert wired.webhook_apply.apply_pending().queued_for_worker == 1
    assert stored_link(wired, "mk_1").state == "error"
    with wired.store.read() as session:
        assert session.get(SyncJob, link_job_id("mk_1")) is not None


class TestBodyCapOverRealHttp:
    """The size limit holds before the body is read: the answer comes while the sender is still
    holding back most of what it announced (a bound on the socket read keeps a regression from
    hanging; the assertions are on the answer)."""

    @pytest.fixture
    def port(self, wired: Services) -> Iterator[int]:
        app = Starlette(routes=[webhook_route(wired.webhooks)])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = int(probe.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=free, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started = threading.Event()
        while not server.started and thread.is_alive():
            started.wait(0.05)
        assert server.started
        yield free
        server.should_exit = True
        thread.join(timeout=10)

    @staticmethod
    def _answer(sock: socket.socket) -> bytes:
        sock.settimeout(30)
        return sock.recv(65536)

    def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives(self, port, wired):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /webhooks/moneykit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 1000
            )
            answer = self._answer(sock)
        assert answer.startswith(b"HTTP/1.1 413")
        assert wired.webhooks.refusal_counts() == {"too_large": 1}

    def test_a_stream_past_the_limit_is_refused_without_waiting_for_its_end(self, port, wired):
        chunk = b"y" * 65536
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /webhooks/moneykit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            try:
                while sent <= wired.webhooks.max_body_bytes:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed while still sending: the answer is already there
            # No closing chunk: a server reading the whole body would wait for ever.
            answer = self._answer(sock)
        assert answer.startswith(b"HTTP/1.1 413")
