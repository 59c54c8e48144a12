"""The attack catalogue: hostile inputs from every side Linkdesk listens to, each refused or
neutralised. Tables, so a new attack is one more row. The README's security section lists what
is defended, how, and where each attack lives (this file and the suites it reuses)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services
from linkdesk.read.export import links_csv
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkQueries
from linkdesk.services.errors import LinkTampered
from linkdesk.store.engine import Store, create_engine, migrate
from linkdesk.store.models import Customer, Institution, Link, WebhookDelivery, WebhookEvent
from linkdesk.store.repository import link_moved
from linkdesk.webhooks.asgi import WEBHOOK_PATH, webhook_route
from tests.unit.conftest import FakeClock, FakeMoneyKit, WebhookSigner
from tests.unit.test_customer_links import tampered_variants
from tests.unit.test_webhook_verify import EXPECTED as SIGNATURE_FORGERIES
from tests.unit.test_webhook_verify import forgeries
from ui.render import institution_card_html, institution_logo, swatch_data_uri

SUPPORT = Actor("sam", Role.SUPPORT)


@pytest.fixture()
def hostile_store() -> Iterator[Store]:
    store = Store(create_engine("sqlite://"))
    migrate(store.engine)
    yield store
    store.dispose()


def add_hostile(
    store: Store,
    *,
    customer_id: str = "cust_1",
    name: str = "Bank",
    color: str | None = "#123456",
    logo: str | None = None,
) -> None:
    """Written with the ORM, past the repository's own validation: the render side must hold
    even for a value that got into the database some other way."""
    with store.write() as session:
        session.add(Institution(institution_id="ins_x", name=name, color=color, logo=logo))
        session.add(Customer(customer_id=customer_id))
        session.flush()
        session.add(
            Link(
                link_id="mk_x",
                customer_id=customer_id,
                institution_id="ins_x",
                state="error",
                error_code="auth_expired",
                tags=[],
            )
        )
        link_moved(session, None, ("error", "auth_expired", "ins_x"))


# -- CSV export: formulas in outside values -------------------------------------------------

FORMULAS = [
    "=1+1",
    '=HYPERLINK("http://127.0.0.1:9/x","click")',
    "+1+1",
    "-1+1",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "=cmd|' /C calc'!A0",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_csv_export_never_starts_a_cell_with_a_formula(hostile_store: Store, formula: str) -> None:
    add_hostile(hostile_store, customer_id=formula, name=formula)
    export = links_csv(LinkQueries(hostile_store), None, sort=LinkSort.LINK_ID)
    (row,) = list(csv.DictReader(io.StringIO(export.text)))
    for column in ("customer_id", "institution_name"):
        assert row[column] == "'" + formula  # shown as text by every spreadsheet


# -- institution names, colours and logos from MoneyKit -------------------------------------

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "Bank</div><iframe src=//127.0.0.1:9>",
    "Bank' style='background:url(//127.0.0.1:9)",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_institution_names_are_escaped_in_the_card(hostile_store: Store, name: str) -> None:
    add_hostile(hostile_store, name=name)
    detail = LinkDetailReads(hostile_store).get_link("mk_x")
    assert detail is not None
    card = institution_card_html(detail.row, dark=False)
    for dangerous in ("<script", "<img src=x", "<iframe", "style='background"):
        assert dangerous not in card


HOSTILE_COLOURS = [
    "red;background:url(//127.0.0.1:9/x)",
    "#fff;x:y",
    '#123456" onload="alert(1)',
    "expression(alert(1))",
    "url(javascript:alert(1))",
    "#12345g",
    "</style><script>",
]


@pytest.mark.parametrize("colour", HOSTILE_COLOURS)
def test_hostile_colours_never_reach_css_or_svg(hostile_store: Store, colour: str) -> None:
    add_hostile(hostile_store, color=colour)
    detail = LinkDetailReads(hostile_store).get_link("mk_x")
    assert detail is not None
    card = institution_card_html(detail.row, dark=False)
    assert colour not in card
    assert "#9aa0a6" in card  # the neutral swatch instead
    assert "url(" not in swatch_data_uri(colour) and "script" not in swatch_data_uri(colour)


HOSTILE_LOGOS = [
    "javascript:alert(1)",
    "http://127.0.0.1:9/logo.png",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(1)>",
    'https://cdn.example/x.png" onerror="alert(1)',
    "//127.0.0.1:9/logo.png",
    "vbscript:msgbox(1)",
]


@pytest.mark.parametrize("logo", HOSTILE_LOGOS)
def test_hostile_logos_are_not_drawn(hostile_store: Store, logo: str) -> None:
    add_hostile(hostile_store, logo=logo)
    detail = LinkDetailReads(hostile_store).get_link("mk_x")
    assert detail is not None
    assert institution_logo(detail.row, dark=False) is None
    assert "<img" not in institution_card_html(detail.row, dark=False)


# -- customer relink tokens, at the page's first check ----------------------------------------


@pytest.fixture()
def relinkable(core_services: Services, fake_moneykit: FakeMoneyKit) -> Services:
    fake_moneykit.add_link("mk_expired", state="error", error_code="auth_expired")
    fake_moneykit.add_link("mk_other", state="error", error_code="auth_expired")
    core_services.discovery.sync_all()
    return core_services


@pytest.mark.parametrize(
    "variant",
    sorted(tampered_variants("eyJ0IjoiYSIsImwiOiJiIiwiZSI6MX0.c2ln", "x.c2ln2")),
)
def test_forged_tokens_are_refused_when_the_repair_page_opens(
    relinkable: Services, variant: str
) -> None:
    made = relinkable.customer_links.create("mk_expired", SUPPORT)
    other = relinkable.customer_links.create("mk_other", SUPPORT)
    forged = tampered_variants(made.token, other.token)[variant]
    with pytest.raises(LinkTampered):
        relinkable.customer_links.check(forged)


# -- the webhook route ------------------------------------------------------------------------


@pytest.fixture()
def webhook_http(
    core_services: Services, fake_moneykit: FakeMoneyKit, signer: WebhookSigner
) -> TestClient:
    fake_moneykit.signer = signer
    return TestClient(Starlette(routes=[webhook_route(core_services.webhooks)]))


def queued(services: Services) -> int:
    with services.store.read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) or 0)


@pytest.mark.parametrize("forgery", sorted(SIGNATURE_FORGERIES))
def test_forged_webhooks_posted_to_the_route_queue_nothing(
    webhook_http: TestClient,
    core_services: Services,
    signer: WebhookSigner,
    core_clock: FakeClock,
    forgery: str,
) -> None:
    body, header = forgeries(signer, core_clock)[forgery]
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["MoneyKit-Signature"] = header
    response = webhook_http.post(WEBHOOK_PATH, content=body, headers=headers)
    assert 400 <= response.status_code < 500 or response.status_code == 503
    assert queued(core_services) == 0
    with core_services.store.read() as session:
        payloads = session.scalars(sa.select(WebhookDelivery.payload)).all()
    assert all(payload is None for payload in payloads)  # no forged body kept


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("GET", b"", 405),
        ("PUT", b"{}", 405),
        ("DELETE", b"", 405),
        # Unsigned junk is refused for its missing signature before the body is parsed.
        ("POST", b"", 401),
        ("POST", b"\x00\xff" * 100, 401),
        ("POST", b"{" * 10_000, 401),
    ],
)
def test_junk_requests_to_the_webhook_route_are_refused(
    webhook_http: TestClient, core_services: Services, method: str, body: bytes, expected: int
) -> None:
    response = webhook_http.request(method, WEBHOOK_PATH, content=body)
    assert response.status_code == expected
    assert body[:20] not in response.content or not body
    assert queued(core_services) == 0


def test_an_oversized_webhook_body_is_refused_before_it_is_stored(
    webhook_http: TestClient, core_services: Services
) -> None:
    big = b'{"x":"' + b"a" * (core_services.webhooks.max_body_bytes + 1) + b'"}'
    response = webhook_http.post(WEBHOOK_PATH, content=big)
    assert response.status_code == 413
    assert queued(core_services) == 0
