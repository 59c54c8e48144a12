"""DiscoveryService: full reconciliation against a fake MoneyKit with several pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from linkdesk.__main__ import main as cli_main
from linkdesk.bootstrap import Services, build_services
from linkdesk.health import Health
from linkdesk.moneykit import APIConnectionError
from linkdesk.read.links import LinkFilters
from linkdesk.services.discovery import DISCOVERY_SUSPECT, NOT_FOUND_KEPT
from linkdesk.store.models import Link, LinkStateChange, SyncJob
from linkdesk.store.repository import get_named_state
from linkdesk.store.sync_jobs import link_job_id

if TYPE_CHECKING:
    from tests.unit.conftest import FakeMoneyKit


@pytest.fixture
def populated(fake_moneykit: FakeMoneyKit) -> FakeMoneyKit:
    fake_moneykit.add_institution("bank-a", "Bank A", color="#112233")
    fake_moneykit.add_institution("bank-b", "Bank B", color="javascript:alert(1)")
    fake_moneykit.add_link("mk_1", tags=["customer:cust_0001", "app:mobile"])
    fake_moneykit.add_link(
        "mk_2", tags=["customer:cust_0001"], state="error", error_code="auth_expired"
    )
    fake_moneykit.add_link(
        "mk_3", institution_id="bank-b", institution_name="Bank B", tags=["customer:cust_0002"]
    )
    fake_moneykit.add_link("mk_4", institution_id="bank-b", institution_name="Bank B")
    fake_moneykit.add_link(
        "mk_5", tags=["customer:cust_0003"], state="error", error_code="institution_error"
    )
    fake_moneykit.failing_links.add("mk_4")
    fake_moneykit.page_size = 2  # three pages
    return fake_moneykit


def test_first_sync_discovers_every_link_and_survives_a_failing_one(
    core_services: Services, populated: FakeMoneyKit
):
    progress: list[tuple[int, int]] = []
    report = core_services.discovery.sync_all(lambda done, total: progress.append((done, total)))

    assert (report.listed, report.ok, report.failed, report.new) == (5, 4, 1, 4)
    assert [f.link_id for f in report.failures] == ["mk_4"]
    assert "500" in report.failures[0].error
    assert progress[0] == (0, 5) and progress[-1] == (5, 5) and len(progress) == 6
    assert populated.calls["GET /links"] == 3  # the cursor advanced through every page
    assert populated.calls["GET /institutions/bank-a"] == 1  # once each, not once per link
    assert populated.calls["GET /institutions/bank-b"] == 1
    assert report.institutions_fetched == 2
    # Four images per institution, each fetched once.
    assert sum(n for k, n in populated.calls.items() if "/assets/" in k) == 8

    links = core_services.links
    assert {r.link_id for r in links.list_links(limit=100).rows} == {"mk_1", "mk_2", "mk_3", "mk_5"}
    detail = core_services.link_detail.get_link("mk_1")
    assert detail is not None
    assert detail.row.customer_id == "cust_0001"
    assert detail.row.tags == ["customer:cust_0001", "app:mobile"]
    assert detail.row.institution_color == "#112233"
    assert (detail.row.institution_avatar or "").startswith("data:image/svg+xml;base64,")
    assert len(detail.accounts) == 1
    bank_b = core_services.link_detail.get_link("mk_3")
    assert bank_b is not None and bank_b.row.institution_color is None  # hostile colour dropped
    assert links.totals.counts_by_health()[Health.NEEDS_RELINK] == 1
    assert links.totals.counts_by_health()[Health.WAIT] == 1
    assert [c.customer_id for c in links.list_customers()] == [
        "cust_0001",
        "cust_0002",
        "cust_0003",
    ]
    audit = core_services.audit.entries()[0]
    assert (audit.action, audit.outcome) == ("sync.run", "partial")


def test_second_sync_records_changes_marks_vanished_links_and_reuses_images(
    core_services: Services, populated: FakeMoneyKit
):
    core_services.discovery.sync_all()
    images_before = sum(n for k, n in populated.calls.items() if "/assets/" in k)

    populated.failing_links.clear()
    populated.links["mk_3"]["state"] = "deleted"  # no longer listed; its own read says deleted
    populated.links["mk_1"].update(state="error", error_code="auth_expired")
    report = core_services.discovery.sync_all()

    # Four listed links read, plus mk_3, which the listing lacked.
    assert (report.listed, report.ok, report.failed) == (4, 5, 0)
    assert report.new == 1  # mk_4, failing the first time
    assert report.deleted == 1
    assert report.state_changes == 2  # mk_1 broke, mk_3 vanished
    assert sum(n for k, n in populated.calls.items() if "/assets/" in k) == images_before
    gone = core_services.link_detail.get_link("mk_3")
    assert gone is not None and gone.row.health is Health.DELETED
    assert gone.state_changes[0].to_state == "deleted"
    broken = core_services.link_detail.get_link("mk_1")
    assert broken is not None and broken.row.error_code == "auth_expired"
    assert [(c.from_state, c.to_error) for c in broken.state_changes][:1] == [
        ("connected", "auth_expired")
    ]
    page = core_services.links.list_links(LinkFilters(error_code="auth_expired"))
    assert {r.link_id for r in page.rows} == {"mk_1", "mk_2"}


def test_unreachable_moneykit_raises_and_deletes_nothing(
    core_services: Services, populated: FakeMoneyKit
):
    populated.failing_links.clear()
    core_services.discovery.sync_all()
    populated.unreachable = True
    with pytest.raises(APIConnectionError):
        core_services.discovery.sync_all()
    assert core_services.totals.counts_by_health()[Health.DELETED] == 0
    assert core_services.audit.entries()[0].outcome == "failed"


def test_parallel_sync_gives_the_same_result(core_settings, populated: FakeMoneyKit, core_clock):
    http = populated.http_client()
    services = build_services(
        core_settings.model_copy(update={"sync_concurrency": 4}),
        http_client=http,
        clock=core_clock,
        sleep=lambda _s: None,
    )
    try:
        report = services.discovery.sync_all()
        assert (report.ok, report.failed) == (4, 1)
        assert services.links.count_links() == 4
        assert populated.calls["GET /institutions/bank-a"] == 1
    finally:
        services.close()
        http.close()


def test_cli_sync_exits_non_zero_when_moneykit_is_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("MONEYKIT_BASE_URL", "http://localhost:9")  # nothing listens there
    monkeypatch.setenv("MONEYKIT_MAX_RETRIES", "0")
    monkeypatch.setenv("MONEYKIT_CLIENT_SECRET", "cli-secret-value")
    assert cli_main(["sync"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "http://localhost:9" in err
    assert "cli-secret-value" not in err


# -- a listing is never proof of deletion --------------------------------------------------------


def stored_states(services: Services) -> dict[str, str]:
    with services.store.read() as session:
        return {link.link_id: link.state for link in session.query(Link).all()}


def suspect_state(services: Services) -> dict[str, object] | None:
    with services.store.read() as session:
        return get_named_state(session, DISCOVERY_SUSPECT)


def many_links(fake: FakeMoneyKit, n: int = 12) -> list[str]:
    ids = [f"mk_{i:02d}" for i in range(n)]
    for link_id in ids:
        fake.add_link(link_id)
    return ids


def test_an_empty_listing_is_suspect_and_changes_nothing(
    core_services: Services, fake_moneykit: FakeMoneyKit, caplog: pytest.LogCaptureFixture
):
    ids = many_links(fake_moneykit)
    core_services.discovery.sync_all()
    reads_before = sum(fake_moneykit.calls[f"GET /links/{i}"] for i in ids)

    fake_moneykit.truncated_listings.append(0)  # one blank answer, e.g. from a proxy
    with caplog.at_level("WARNING", logger="linkdesk.services.discovery"):
        report = core_services.discovery.sync_all()

    assert report.suspect and report.deleted == 0 and "suspect" in report.summary
    assert set(stored_states(core_services).values()) == {"connected"}
    assert sum(fake_moneykit.calls[f"GET /links/{i}"] for i in ids) == reads_before
    flagged = suspect_state(core_services)
    assert flagged is not None
    assert (flagged["listed"], flagged["known"], flagged["missing"]) == (0, 12, 12)
    assert any("suspect listing" in r.getMessage() for r in caplog.records)
    actions = [(e.action, e.outcome) for e in core_services.audit.entries()]
    assert ("discovery.suspect", "refused") in actions

    complete = core_services.discovery.sync_all()
    assert not complete.suspect and complete.deleted == 0
    assert suspect_state(core_services) == {}


def test_a_partial_listing_reads_the_links_it_lacks_instead_of_deleting_them(
    core_services: Services, fake_moneykit: FakeMoneyKit
):
    ids = many_links(fake_moneykit, 4)  # fewer than the floor: not suspect, read one by one
    core_services.discovery.sync_all()
    fake_moneykit.truncated_listings.append(1)
    report = core_services.discovery.sync_all()
    assert not report.suspect and report.deleted == 0
    assert set(stored_states(core_services).values()) == {"connected"}
    assert all(fake_moneykit.calls[f"GET /links/{i}"] == 2 for i in ids)


def test_a_404_on_one_read_keeps_the_link(core_services: Services, fake_moneykit: FakeMoneyKit):
    many_links(fake_moneykit, 3)
    core_services.discovery.sync_all()
    del fake_moneykit.links["mk_01"]  # not listed, and its read answers 404
    report = core_services.discovery.sync_all()
    assert report.deleted == 0
    assert [(f.link_id, f.error) for f in report.failures] == [("mk_01", NOT_FOUND_KEPT)]
    assert stored_states(core_services)["mk_01"] == "connected"


def test_a_410_or_a_deleted_state_deletes_and_a_relisted_link_is_restored(
    core_services: Services, fake_moneykit: FakeMoneyKit
):
    many_links(fake_moneykit, 3)
    core_services.discovery.sync_all()
    core_services.jobs.ensure_jobs()
    fake_moneykit.links["mk_00"]["state"] = "deleted"
    fake_moneykit.link_faults["mk_01"] = (410, {})
    report = core_services.discovery.sync_all()
    assert report.deleted == 2
    assert stored_states(core_services) == {
        "mk_00": "deleted",
        "mk_01": "deleted",
        "mk_02": "connected",
    }
    core_services.jobs.ensure_jobs()  # deleted links lose their jobs
    with core_services.store.read() as session:
        assert session.get(SyncJob, link_job_id("mk_00")) is None

    fake_moneykit.links["mk_00"]["state"] = "connected"  # MoneyKit lists it again
    report = core_services.discovery.sync_all()
    assert report.restored == 1
    assert stored_states(core_services)["mk_00"] == "connected"
    with core_services.store.read() as session:
        assert session.get(SyncJob, link_job_id("mk_00")) is not None
        history = [
            (c.from_state, c.to_state)
            for c in session.query(LinkStateChange)
            .filter(LinkStateChange.link_id == "mk_00")
            .order_by(LinkStateChange.id)
        ]
    assert history == [(None, "connected"), ("connected", "deleted"), ("deleted", "connected")]
    actions = [(e.action, e.link_id) for e in core_services.audit.entries()]
    assert ("link.restore", "mk_00") in actions
