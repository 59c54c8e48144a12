"""Property tests: cursor paging loses and repeats nothing while the data changes underneath."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sandbox.app import create_app
from tests.sandbox.conftest import CLIENT_ID, CLIENT_SECRET, PUBLIC_URL, FakeClock, issue_token

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _client(demo_links: int) -> TestClient:
    app = create_app(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        demo_links=demo_links,
        public_url=PUBLIC_URL,
        clock=FakeClock(),
        refresh_delay_s=0,
        rate_limits=False,
    )
    client = TestClient(app, base_url=PUBLIC_URL)
    client.headers["Authorization"] = f"Bearer {issue_token(client)}"
    return client


def _make_link(client: TestClient, customer: str) -> str:
    body = {"customer_user": {"id": customer}, "redirect_uri": "http://localhost:8501/oauth_return"}
    token = client.post("/link-session", json=body).json()["link_session_token"]
    page = {"Authorization": f"Bearer {token}"}
    login = client.post(
        "/connect-api/institution",
        params={"mode": "start"},
        json={"institution_id": "moneykit-instant-bank"},
        headers=page,
    ).json()
    done = client.post(
        "/connect-api/complete",
        params={"mode": "start"},
        json={"account_ids": [a["account_id"] for a in login["accounts"]]},
        headers=page,
    ).json()
    exchanged = client.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": done["completion"]["exchangeable_token"]},
    )
    assert exchanged.status_code == 201
    link_id: str = done["completion"]["link_id"]
    return link_id


# Between two pages: create a link, or delete the n-th link still alive.
link_ops = st.lists(
    st.one_of(st.just(("create", 0)), st.tuples(st.just("delete"), st.integers(0, 10_000))),
    max_size=6,
)


@SETTINGS
@given(demo=st.integers(0, 1100), ops_per_page=st.lists(link_ops, min_size=1, max_size=6))
def test_links_pages_lose_and_repeat_nothing(demo: int, ops_per_page: list[list[Any]]) -> None:
    with _client(demo) as client:
        before = {row["link_id"] for row in _all_links(client)}
        created: set[str] = set()
        deleted: set[str] = set()
        seen: list[str] = []
        cursor: str | None = None
        step = 0
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            body = client.get("/links", params=params).json()
            seen.extend(row["link_id"] for row in body["links"])
            for op, n in ops_per_page[step % len(ops_per_page)]:
                alive = sorted((before | created) - deleted)
                if op == "create":
                    created.add(_make_link(client, "cust_prop"))
                elif alive:
                    victim = alive[n % len(alive)]
                    assert client.delete(f"/links/{victim}").status_code == 204
                    deleted.add(victim)
            step += 1
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)), "a link came twice"
        # Every link alive for the whole walk was seen; nothing deleted before its page shows up.
        assert before - deleted <= set(seen)


def _all_links(client: TestClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5000}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/links", params=params).json()
        rows.extend(body["links"])
        cursor = body["next_cursor"]
        if not cursor:
            return rows


@SETTINGS
@given(
    size=st.integers(1, 60),
    refresh_after_page=st.lists(st.booleans(), min_size=1, max_size=12),
    days_between=st.integers(0, 5),
)
def test_sync_pages_apply_to_the_server_state(
    size: int, refresh_after_page: list[bool], days_between: int
) -> None:
    with _client(0) as client:
        link_id = _make_link(client, "cust_sync")

        mirror: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        pages = 0
        seen_changes: set[tuple[str, str, str]] = set()
        while True:
            params: dict[str, Any] = {"size": size}
            if cursor:
                params["cursor"] = cursor
            body = client.get(f"/links/{link_id}/transactions/sync", params=params).json()
            changes = body["transactions"]
            ids = [t["transaction_id"] for t in changes["created"] + changes["updated"]]
            ids += changes["removed"]
            assert len(ids) == len(set(ids)), "a transaction twice in one page"
            for kind in ("created", "updated"):
                for txn in changes[kind]:
                    key = (kind, txn["transaction_id"], txn["description"])
                    assert key not in seen_changes, "the same change came twice"
                    seen_changes.add(key)
                    mirror[txn["transaction_id"]] = txn
            for txn_id in changes["removed"]:
                mirror.pop(txn_id, None)
            cursor = body["cursor"]["next"]
            if refresh_after_page[pages % len(refresh_after_page)] and pages < 12:
                # Days pass at the bank, then a refresh lands (refresh_delay_s=0: at once).
                client.post("/_sandbox/time", json={"advance_seconds": days_between * 86400})
                # Access tokens live an hour on the same clock.
                client.headers["Authorization"] = f"Bearer {issue_token(client)}"
                refresh = client.post(
                    f"/links/{link_id}/products", json={"products": ["transactions"]}
                )
                assert refresh.status_code == 202, refresh.text
            pages += 1
            # Stop once caught up after the last refresh: a refresh after this page means more.
            refreshed = refresh_after_page[(pages - 1) % len(refresh_after_page)] and pages <= 12
            if not body["has_more"] and pages >= len(refresh_after_page) and not refreshed:
                break
        server = client.get(
            f"/links/{link_id}/transactions",
            params={"size": 1000, "start_date": "2000-01-01", "end_date": "2100-01-01"},
        ).json()["transactions"]
        posted_server = {t["transaction_id"]: t for t in server if not t["pending"]}
        posted_mirror = {k: v for k, v in mirror.items() if not v["pending"]}
        assert posted_mirror == posted_server
        # Pending ones are replaced silently: the client keeps stale ones, never misses new ones.
        assert {t["transaction_id"] for t in server if t["pending"]} <= set(mirror)
