"""The Overview's snapshot: totals from the shared summary's groups, moves over the last hour
from the recorded state changes, and a bank's links breaking now against its usual rate."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from linkdesk.bootstrap import Services
from linkdesk.store.models import Link
from tests.unit.conftest import FakeClock, FakeMoneyKit


def fill(fake: FakeMoneyKit) -> None:
    for i in range(12):
        fake.add_link(f"a_{i:02d}", institution_id="bank-a", institution_name="Bank A")
    for i in range(4):
        fake.add_link(f"b_{i:02d}", institution_id="bank-b", institution_name="Bank B")
    for i in range(3):
        fake.links[f"a_{i:02d}"].update(state="error", error_code="auth_expired")
    fake.links["b_00"].update(state="error", error_code="institution_error")
    fake.links["b_01"].update(state="connecting")


def resync(services: Services) -> None:
    services.discovery.sync_all()


def test_states_and_errors_come_from_the_summary_and_match_a_count(
    core_services: Services, fake_moneykit: FakeMoneyKit
) -> None:
    fill(fake_moneykit)
    resync(core_services)
    snapshot = core_services.overview.snapshot(max_age=0)
    with core_services.store.read() as session:
        by_state = dict(
            session.execute(sa.select(Link.state, sa.func.count()).group_by(Link.state)).all()
        )
        by_error = dict(
            session.execute(
                sa.select(Link.error_code, sa.func.count())
                .where(Link.error_code.is_not(None))
                .group_by(Link.error_code)
            ).all()
        )
    assert snapshot.by_state == by_state
    assert snapshot.by_error == by_error == {"auth_expired": 3, "institution_error": 1}


def test_moves_over_the_last_hour_follow_the_state_changes(
    core_services: Services, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    fill(fake_moneykit)
    resync(core_services)  # first sightings: every link enters its group
    core_clock.advance(2 * 3600)  # ...two hours ago
    for i in range(3, 8):
        fake_moneykit.links[f"a_{i:02d}"].update(state="error", error_code="auth_expired")
    fake_moneykit.links["a_00"].update(state="connected", error_code=None)
    resync(core_services)
    changes = core_services.overview.snapshot(max_age=0).changes
    assert changes.complete
    assert changes.error("auth_expired") == 5 - 1
    assert changes.needs_relink() == 4
    assert changes.state("connected") == 1 - 5
    assert changes.error("institution_error") == 0  # its change is older than an hour


def test_a_bank_breaking_faster_than_usual_is_in_trouble(
    core_services: Services, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> None:
    fill(fake_moneykit)
    resync(core_services)
    # Over the day before: one link of Bank A broke and came back every few hours.
    for _ in range(4):
        core_clock.advance(4 * 3600)
        fake_moneykit.links["a_11"].update(state="error", error_code="auth_expired")
        resync(core_services)
        core_services.overview.snapshot(max_age=0)  # the rollup takes them in as they come
        core_clock.advance(600)
        fake_moneykit.links["a_11"].update(state="connected", error_code=None)
        resync(core_services)
    core_clock.advance(3600)
    for i in range(3, 10):
        fake_moneykit.links[f"a_{i:02d}"].update(state="error", error_code="auth_expired")
    fake_moneykit.links["b_02"].update(state="error", error_code="auth_expired")
    resync(core_services)
    snapshot = core_services.overview.snapshot(max_age=0)
    bank_a, bank_b = snapshot.banks
    assert (bank_a.institution_id, bank_a.broke, bank_a.net) == ("bank-a", 7, 7)
    assert 0 < bank_a.usual < 1  # four breaks over 96 windows of 15 minutes
    assert snapshot.in_trouble(bank_a)
    assert (bank_b.institution_id, bank_b.net) == ("bank-b", 1)
    assert not snapshot.in_trouble(bank_b)  # fewer than five links
    # A quarter of an hour later, nothing broke since: no bank is listed.
    core_clock.advance(timedelta(minutes=20).total_seconds())
    assert core_services.overview.snapshot(max_age=0).banks == []
