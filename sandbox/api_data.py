"""MoneyKit data routes: account details, identity, transactions, investments, users, import and
the test webhook. Thin, like :mod:`sandbox.api`: parse, call :class:`SandboxState`, render.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox import bankdata, errors, ledger
from sandbox.api import _authorize, _int_query, base_url
from sandbox.models import Account, Link
from sandbox.schemas import (
    EnrichmentIn,
    ImportLinkIn,
    ImportTransactionsIn,
    WebhookTestIn,
    parse_body,
)
from sandbox.state import SandboxState
from sandbox.views import account_json, link_json

PAGE_SIZE_RANGE = (1, 1000)
SYNC_SIZE_RANGE = (1, 500)
DEFAULT_PAGE_SIZE = 50
DEFAULT_SYNC_SIZE = 100


def _link_body(request: Request, state: SandboxState, link: Link) -> dict[str, Any]:
    return link_json(link, state.institutions[link.institution_id], base_url(request))


def _accounts(request: Request, link: Link, param: str = "account_ids") -> list[Account]:
    wanted = set(request.query_params.getlist(param))
    return [a for a in link.accounts if not wanted or a.account_id in wanted]


def _country(state: SandboxState, link: Link) -> str:
    return state.institutions[link.institution_id].country


def _date_query(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise errors.validation_error(
            ["query", name], "Input should be a valid date", "date_from_datetime_parsing"
        ) from exc


def _bounded(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    value = _int_query(request, name)
    if value is None:
        return default
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise errors.validation_error(
            ["query", name], f"Input should be {bound}", "greater_than_equal"
        )
    return value


def _paging(request: Request) -> tuple[int, int, date, date]:
    page = _bounded(request, "page", 1, 1, None)
    size = _bounded(request, "size", DEFAULT_PAGE_SIZE, *PAGE_SIZE_RANGE)
    state: SandboxState = request.app.state.sandbox
    end = _date_query(request, "end_date") or state.clock().date()
    start = _date_query(request, "start_date") or end - timedelta(days=90)
    return page, size, start, end


# ---------------------------------------------------------------------------------- accounts
async def get_account(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "accounts")
    wanted = request.path_params["account_id"]
    account = next((a for a in link.accounts if a.account_id == wanted), None)
    if account is None:
        # The SDK's 404 model for this call only knows ``link_error.not_found``.
        raise errors.MoneyKitError(404, "link_error.not_found", "Account not found.")
    return JSONResponse(
        {"account": account_json(account), "link": _link_body(request, state, link)}
    )


async def get_account_numbers(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "account_numbers")
    country = _country(state, link)
    fetched = state.registry.fetched(link, "account_numbers")
    accounts = [
        {
            **account_json(a),
            "numbers": (
                bankdata.account_numbers_json(state.seed, a, country)
                if fetched
                else bankdata.no_account_numbers()
            ),
        }
        for a in link.accounts
    ]
    return JSONResponse({"accounts": accounts, "link": _link_body(request, state, link)})


async def get_identity(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "identity")
    country = _country(state, link)
    # Not fetched yet (no prefetch, no refresh): the accounts are known, their owners are not.
    fetched = state.registry.fetched(link, "identity")
    accounts = [
        {
            **account_json(a),
            "owners": bankdata.owners_json(state.seed, link, a, country) if fetched else [],
        }
        for a in _accounts(request, link)
    ]
    return JSONResponse({"accounts": accounts, "link": _link_body(request, state, link)})


# ------------------------------------------------------------------------------ transactions
def _in_range(txns: list[ledger.Txn], ids: set[str], start: date, end: date) -> list[ledger.Txn]:
    return [t for t in txns if (not ids or t.account_id in ids) and start <= t.date <= end]


async def get_transactions(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "transactions")
    page, size, start, end = _paging(request)
    accounts = _accounts(request, link)
    ids = {a.account_id for a in accounts} if request.query_params.getlist("account_ids") else set()
    matches = ledger.newest_first(
        _in_range(list(state.registry.ledger(link).txns.values()), ids, start, end)
    )
    chunk = matches[(page - 1) * size : page * size]
    return JSONResponse(
        {
            "total": len(matches),
            "page": page,
            "size": size,
            "transactions": [ledger.txn_json(t) for t in chunk],
            "accounts": [account_json(a) for a in accounts],
            "link": _link_body(request, state, link),
        }
    )


def _encode_sync_cursor(link_id: str, version: int) -> str:
    raw = json.dumps({"l": link_id, "v": version}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_sync_cursor(cursor: str, link_id: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        version = data["v"]
        owner = data["l"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise errors.validation_error(["query", "cursor"], "Invalid cursor", "value_error") from exc
    if not isinstance(version, int) or version < 0 or owner != link_id:
        raise errors.validation_error(["query", "cursor"], "Invalid cursor", "value_error")
    return version


async def get_transactions_sync(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "transactions")
    size = _bounded(request, "size", DEFAULT_SYNC_SIZE, *SYNC_SIZE_RANGE)
    cursor = request.query_params.get("cursor")
    after = _decode_sync_cursor(cursor, link.link_id) if cursor else 0
    page = ledger.sync_page(state.registry.ledger(link), after, size)
    return JSONResponse(
        {
            "transactions": {
                "created": [ledger.txn_json(t) for t in page.created],
                "updated": [ledger.txn_json(t) for t in page.updated],
                "removed": page.removed,
            },
            "accounts": [account_json(a) for a in link.accounts],
            "cursor": {"next": _encode_sync_cursor(link.link_id, page.next_version)},
            "has_more": page.has_more,
            "link": _link_body(request, state, link),
        }
    )


async def correct_enrichment(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "transactions")
    body = await parse_body(request, EnrichmentIn)
    book = state.registry.ledger(link)
    txn = book.txns.get(request.path_params["txn_id"])
    if txn is None:
        raise errors.MoneyKitError(404, "transaction_error.not_found", "Transaction not found.")
    corrected = replace(txn, category=body.category, subcategory=body.subcategory)
    book.record("updated", corrected)
    return JSONResponse(
        {
            "transactions": [ledger.txn_json(corrected)],
            "accounts": [account_json(a) for a in link.accounts if a.account_id == txn.account_id],
            "link": _link_body(request, state, link),
            "cursor": {"next": _encode_sync_cursor(link.link_id, book.version)},
        }
    )


# ------------------------------------------------------------------------------- investments
async def get_holdings(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "investments")
    accounts = _accounts(request, link)
    holdings, securities = (
        bankdata.holdings(state.seed, accounts, state.clock())
        if state.registry.fetched(link, "investments")
        else ([], [])
    )
    return JSONResponse(
        {
            "holdings": holdings,
            "securities": securities,
            "accounts": [account_json(a) for a in accounts],
            "link": _link_body(request, state, link),
        }
    )


async def get_investment_transactions(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.data_link(request.path_params["link_id"], "investments")
    page, size, start, end = _paging(request)
    accounts = _accounts(request, link)
    rows, securities = (
        bankdata.investment_transactions(state.seed, accounts, state.clock())
        if state.registry.fetched(link, "investments")
        else ([], [])
    )
    rows = [r for r in rows if start.isoformat() <= r["date"] <= end.isoformat()]
    chunk = rows[(page - 1) * size : page * size]
    used = {r.get("security_id") for r in chunk}
    return JSONResponse(
        {
            "total": len(rows),
            "page": page,
            "size": size,
            "investment_transactions": chunk,
            "securities": [s for s in securities if s["security_id"] in used],
            "accounts": [account_json(a) for a in accounts],
            "link": _link_body(request, state, link),
        }
    )


# ------------------------------------------------------------------------------------- users
def _readable(link: Link) -> bool:
    return link.state not in ("connecting", "awaiting_token_exchange")


async def get_user_links(request: Request) -> Response:
    state = _authorize(request)
    links = state.registry.user_links(request.path_params["user_id"])
    return JSONResponse(
        {"links": {link.link_id: _link_body(request, state, link) for link in links}}
    )


async def get_user_accounts(request: Request) -> Response:
    state = _authorize(request)
    links = [
        link
        for link in state.registry.user_links(request.path_params["user_id"])
        if _readable(link)
    ]
    return JSONResponse(
        {
            "links": {
                link.link_id: [account_json(a) for a in _accounts(request, link)] for link in links
            }
        }
    )


async def get_user_transactions(request: Request) -> Response:
    state = _authorize(request)
    page, size, start, end = _paging(request)
    wanted = set(request.query_params.getlist("account_id"))
    links = [
        link
        for link in state.registry.user_links(request.path_params["user_id"])
        if _readable(link) and "transactions" in link.products
    ]
    txns: list[ledger.Txn] = []
    accounts: list[Account] = []
    for link in links:
        chosen = [a for a in link.accounts if not wanted or a.account_id in wanted]
        accounts.extend(chosen)
        ids = {a.account_id for a in chosen}
        txns.extend(
            t
            for t in state.registry.ledger(link).txns.values()
            if t.account_id in ids and start <= t.date <= end
        )
    ordered = ledger.newest_first(txns)
    chunk = ordered[(page - 1) * size : page * size]
    return JSONResponse(
        {
            "total": len(ordered),
            "page": page,
            "size": size,
            "transactions": [ledger.txn_json(t) for t in chunk],
            "accounts": [account_json(a) for a in accounts],
        }
    )


# ------------------------------------------------------------------------------------ import
async def import_link(request: Request) -> Response:
    state = _authorize(request)
    body = await parse_body(request, ImportLinkIn)
    link = state.imports.import_link(body)
    return JSONResponse(_link_body(request, state, link))


async def import_transactions(request: Request) -> Response:
    state = _authorize(request)
    link_id = request.path_params["link_id"]
    state.registry.live_link(link_id)
    body = await parse_body(request, ImportTransactionsIn)
    link = state.imports.import_transactions(link_id, body.transactions)
    return JSONResponse(_link_body(request, state, link))


# ---------------------------------------------------------------------------------- webhooks
async def trigger_test_webhook(request: Request) -> Response:
    state = _authorize(request)
    link_id = request.path_params["link_id"]
    link = state.registry.live_link(link_id)
    body = await parse_body(request, WebhookTestIn)
    token = state.events.test_event(link, body.webhook_event, body.webhook_idempotency_key)
    return JSONResponse({"delivery_token": token})


def routes() -> list[BaseRoute]:
    # Literal segments before `{account_id}`; `/links/import` is registered ahead of
    # `/links/{link_id}` by the app.
    return [
        Route("/links/import", import_link, methods=["POST"]),
        Route("/links/{link_id}/import/transactions", import_transactions, methods=["POST"]),
        Route("/links/{link_id}/accounts/numbers", get_account_numbers, methods=["GET"]),
        Route("/links/{link_id}/accounts/{account_id}", get_account, methods=["GET"]),
        Route("/links/{link_id}/identity", get_identity, methods=["GET"]),
        Route("/links/{link_id}/transactions", get_transactions, methods=["GET"]),
        Route("/links/{link_id}/transactions/sync", get_transactions_sync, methods=["GET"]),
        Route(
            "/links/{link_id}/transactions/{txn_id}/enrichment",
            correct_enrichment,
            methods=["POST"],
        ),
        Route("/links/{link_id}/investments/holdings", get_holdings, methods=["GET"]),
        Route(
            "/links/{link_id}/investments/transactions",
            get_investment_transactions,
            methods=["GET"],
        ),
        Route("/users/{user_id}/links", get_user_links, methods=["GET"]),
        Route("/users/{user_id}/accounts", get_user_accounts, methods=["GET"]),
        Route("/users/{user_id}/transactions", get_user_transactions, methods=["GET"]),
        Route("/webhooks/test/link/{link_id}", trigger_test_webhook, methods=["POST"]),
    ]
