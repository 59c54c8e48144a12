"""server.py's `/healthz`: the process's own services (the core's bootstrap) and a probe that
costs the same whatever the number of links."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from linkdesk.bootstrap import Services, forget_process_services, process_services
from ui.wiring import get_services


@pytest.fixture()
def process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'health.db'}")
    # Nothing here talks to MoneyKit; a closed loopback port makes sure of it.
    monkeypatch.setenv("MONEYKIT_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MONEYKIT_CONNECT_HOST", "http://127.0.0.1:9")
    forget_process_services()
    gc.unfreeze()
    services = process_services()
    yield services
    forget_process_services()
    services.close()
    gc.unfreeze()  # the rest of the test session collects as usual


def _health_client() -> TestClient:
    import server

    return TestClient(Starlette(routes=[Route("/healthz", server.healthz, methods=["GET"])]))


def _statements_during(services: Services, action: Any) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(services.store.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(services.store.engine, "before_cursor_execute", record)
    return seen


def test_what_the_process_built_is_kept_out_of_full_collections(process: Services):
    # A full collection walks every tracked object; those of the process's start never die.
    assert gc.get_freeze_count() > 10_000


def test_the_pages_and_the_server_share_the_process_services(process: Services):
    assert get_services() is process
    get_services.clear()
    rebuilt = get_services()
    assert rebuilt is not process and rebuilt is process_services()
    rebuilt.close()


def test_the_health_probe_answers_without_counting_the_links(process: Services):
    answers: list[Any] = []
    with _health_client() as http:
        statements = _statements_during(process, lambda: answers.append(http.get("/healthz")))
    assert answers[0].status_code == 200 and answers[0].json() == {"ok": True}
    assert statements, "the probe must reach the database"
    over_links = [s for s in statements if "links" in s.lower()]
    assert not over_links, over_links
    assert not [s for s in statements if "count(" in s.lower()]


def test_the_health_probe_says_503_when_the_store_does_not_answer(process: Services):
    process.store.engine.dispose()
    with _health_client() as http:

        def refuse(*args: Any) -> None:
            raise RuntimeError("store unavailable")

        event.listen(process.store.engine, "before_cursor_execute", refuse)
        try:
            answer = http.get("/healthz")
        finally:
            event.remove(process.store.engine, "before_cursor_execute", refuse)
    assert answer.status_code == 503 and answer.json() == {"ok": False}
