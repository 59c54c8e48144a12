"""The customer repair page (`/repair?token=…`): bad links refused when it opens, nothing of
Linkdesk shown (no link id, no staff name), the customer's own bank name as text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.read.links import LinkFilters
from linkdesk.settings import Settings
from linkdesk.store.models import CustomerLinkToken, Link, RelinkLease
from tests.app.conftest import dashboard
from ui.render import plain

SUPPORT = Actor("priya.support", Role.SUPPORT)


@dataclass
class Repair:
    services: Services
    link_id: str
    token: str


@pytest.fixture()
def repair(app_env: str) -> Iterator[Repair]:
    services = build_services(Settings(), migrate_schema=False)
    try:
        rows = services.links.list_links(LinkFilters(error_code="auth_expired"), limit=50).rows
        with services.store.read() as session:
            leased = set(session.scalars(sa.select(RelinkLease.link_id)))
        link_id = next(row.link_id for row in rows if row.link_id not in leased)
        made = services.customer_links.create(link_id, SUPPORT, reason="called in")
        yield Repair(services, link_id, made.token)
    finally:
        with services.store.write() as session:
            session.execute(sa.delete(RelinkLease).where(RelinkLease.holder == SUPPORT.name))
            # A link has one live customer link at most: the next test makes its own.
            session.execute(
                sa.delete(CustomerLinkToken).where(CustomerLinkToken.created_by == SUPPORT.name)
            )
        services.close()


def open_repair(token: str) -> AppTest:
    app = dashboard(role=None, token=token).run()
    app.switch_page("app_pages/customer_relink.py").run()
    assert not app.exception
    return app


def all_text(app: AppTest) -> str:
    parts = [
        e.value
        for kind in ("error", "info", "success", "warning", "markdown")
        for e in getattr(app, kind)
    ]
    return " ".join(str(part) for part in parts)


def test_a_valid_link_names_only_the_customers_bank(repair: Repair) -> None:
    app = open_repair(repair.token)
    assert [button.label for button in app.button] == ["Reconnect my bank"]
    text = all_text(app)
    assert repair.link_id not in text and "priya" not in text
    bank = repair.services.link_detail.get_link(repair.link_id)
    assert bank is not None and bank.row.institution_name
    assert f"Your bank ({plain(bank.row.institution_name)}) asked you to sign in again" in text


def test_a_used_link_is_refused_when_the_page_opens(repair: Repair) -> None:
    with repair.services.store.write() as session:
        session.execute(
            sa.update(CustomerLinkToken)
            .where(CustomerLinkToken.link_id == repair.link_id)
            .values(used_at=datetime.now(UTC))
        )
    app = open_repair(repair.token)
    assert not app.button
    assert "already been used" in all_text(app)


def test_an_expired_link_is_refused_when_the_page_opens(repair: Repair) -> None:
    # The expiry is signed into the token: a token made by a service whose clock says
    # "two days ago" has expired by now.
    past = datetime.now(UTC) - timedelta(days=2)
    with repair.services.store.write() as session:
        # A link has one live customer link at most: drop the fixture's to make the old one.
        session.execute(
            sa.delete(CustomerLinkToken).where(CustomerLinkToken.link_id == repair.link_id)
        )
    old = build_services(Settings(), migrate_schema=False, clock=lambda: past)
    try:
        made = old.customer_links.create(repair.link_id, SUPPORT)
    finally:
        old.close()
    app = open_repair(made.token)
    assert not app.button
    assert "expired" in all_text(app)


@pytest.mark.parametrize(
    "forged",
    ["", "abc", "a.b", "a.b.c", "eyJ2IjoxfQ.AAAA", "%00", "' OR 1=1 --", "x" * 5000],
)
def test_forged_tokens_are_refused_at_once(app_env: str, forged: str) -> None:
    app = open_repair(forged)
    assert not app.button
    assert app.error  # "needs the link" for an empty token, "not valid" for the others


def test_a_repair_in_progress_names_neither_the_staff_member_nor_the_link(
    repair: Repair,
) -> None:
    now = datetime.now(UTC)
    with repair.services.store.write() as session:
        session.add(
            RelinkLease(
                link_id=repair.link_id,
                holder=SUPPORT.name,
                session_id="s" * 32,
                acquired_at=now,
                expires_at=now + timedelta(minutes=15),
            )
        )
    app = open_repair(repair.token)
    text = all_text(app)
    assert "already in progress" in text
    assert SUPPORT.name not in text and repair.link_id not in text
    assert not app.button


def test_a_link_that_works_again_has_nothing_to_repair(repair: Repair) -> None:
    with repair.services.store.write() as session:
        session.execute(
            sa.update(Link)
            .where(Link.link_id == repair.link_id)
            .values(state="connected", error_code=None)
        )
    try:
        app = open_repair(repair.token)
        assert "nothing to repair" in all_text(app)
        assert not app.button
    finally:
        with repair.services.store.write() as session:
            session.execute(
                sa.update(Link)
                .where(Link.link_id == repair.link_id)
                .values(state="error", error_code="auth_expired")
            )
