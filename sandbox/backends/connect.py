"""MoneyKit's Connect area: link sessions, the hosted Connect flow, and the token exchange.

The flow a Connect page drives through ``/connect-api/*``: choose an institution, log in
(credentials, MFA, a one-time code sent to a chosen device, or the bank's OAuth page), grant the
optional products (permissions), keep accounts; then a new link waits in
``awaiting_token_exchange`` until the client exchanges its token, and a relink is applied at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from sandbox import errors
from sandbox.backends.base import Clock, Seeded
from sandbox.backends.institutions import InstitutionsBackend
from sandbox.backends.links import LinksBackend, RefreshStarted
from sandbox.backends.webhooks import WebhooksBackend
from sandbox.demo import custom_accounts, make_accounts
from sandbox.errors import ConnectError
from sandbox.institutions import GOOD_PASSWORD, GOOD_USERNAME, Institution
from sandbox.models import Account, ExchangeableToken, Link, LinkSession, ProductStatus
from sandbox.redirects import RedirectUris
from sandbox.schemas import CreateLinkSessionIn

# Logins of the credentials banks (documented in the README and on the Credentials screen).
LOCKED_USERNAME = "user_locked"
MFA_USERNAME = "user_mfa"
OTP_USERNAME = "user_otp"
MFA_CODE = "123456"
# Where the bank offers to send a one-time code (OTP screens).
OTP_DEVICES = (
    {"device_id": "sms", "label": "Text message to (•••) •••-0123"},
    {"device_id": "email", "label": "Email to u•••@example.com"},
)
LINK_SESSION_TTL = timedelta(minutes=30)
# Products a new link gets when the link session asks for none (assumed; MoneyKit does not say).
DEFAULT_SESSION_PRODUCTS = ("accounts", "transactions")

ChallengeKind = Literal["mfa", "otp_device", "otp"]


@dataclass(frozen=True)
class MfaRequired:
    """The bank wants more than the password: a code (``mfa``, ``otp``) or a device to send one
    to (``otp_device``)."""

    institution: Institution
    kind: ChallengeKind = "mfa"


@dataclass(frozen=True)
class OAuthRequired:
    institution: Institution
    oauth_state: str


@dataclass(frozen=True)
class ConnectResult:
    """What the Connect UI needs after a flow finishes."""

    link: Link
    institution: Institution
    exchangeable_token: str | None
    selected: list[Account]


LoginOutcome = ConnectResult | list[Account] | MfaRequired | OAuthRequired


@dataclass(frozen=True)
class Exchanged:
    link: Link
    # Products whose prefetch started with the exchange; the caller lands them later.
    refresh: RefreshStarted


class ConnectBackend:
    def __init__(
        self,
        *,
        clock: Clock,
        seeded: Seeded,
        catalogue: InstitutionsBackend,
        links: LinksBackend,
        events: WebhooksBackend,
        redirect_uris: RedirectUris,
    ) -> None:
        self._clock = clock
        self._seeded = seeded
        self._catalogue = catalogue
        self._links = links
        self._events = events
        self.redirect_uris = redirect_uris
        self.link_sessions: dict[str, LinkSession] = {}
        self.exchangeable_tokens: dict[str, ExchangeableToken] = {}
        # When true the OAuth bank page sends COOP, which cuts `window.opener` of the popup.
        self.cut_opener = False

    def reset(self) -> None:
        self.link_sessions = {}
        self.exchangeable_tokens = {}
        self.cut_opener = False

    # ----------------------------------------------------------------------- link sessions
    def create_link_session(self, request: CreateLinkSessionIn) -> str:
        self.redirect_uris.check(request.redirect_uri)
        if request.existing_link_id is not None:
            self._links.live_link(request.existing_link_id)
        elif request.institution_id is not None:
            self._catalogue.institution(request.institution_id)
        settings = request.settings.model_dump(exclude_none=True) if request.settings else {}
        now = self._clock()
        token = f"lst_{secrets.token_urlsafe(24)}"
        self.link_sessions[token] = LinkSession(
            token=token,
            created_at=now,
            expires_at=now + LINK_SESSION_TTL,
            customer_user=request.customer_user.model_dump(exclude_none=True),
            redirect_uri=request.redirect_uri,
            existing_link_id=request.existing_link_id,
            institution_id=request.institution_id if request.existing_link_id is None else None,
            webhook=request.webhook,
            link_tags=list(request.link_tags) if request.link_tags is not None else None,
            settings=settings,
            custom_accounts=(
                [a.model_dump() for a in request.custom_sandbox_data.accounts]
                if request.custom_sandbox_data
                else None
            ),
            owners=(
                list(request.custom_sandbox_data.owners)
                if request.custom_sandbox_data and request.custom_sandbox_data.owners
                else None
            ),
            connect_features=dict(request.connect_features or {}),
        )
        return token

    def exchange_token(self, exchangeable_token: str) -> Exchanged:
        """``POST /link-session/exchange-token``: the link becomes ``connected``, once.

        Accounts were read while the user was in Connect; products asked for with ``prefetch``
        start fetching now, the others wait for the client's first refresh.
        """
        record = self.exchangeable_tokens.get(exchangeable_token)
        if record is None:
            raise errors.invalid_token_exchange("Invalid exchangeable token.")
        if record.used_at is not None:
            raise errors.invalid_token_exchange("This token has already been exchanged.")
        link = self._links.links.get(record.link_id)
        if link is None or link.state == "deleted":
            raise errors.invalid_token_exchange("The link for this token no longer exists.")
        now = self._clock()
        record.used_at = now
        refresh = RefreshStarted(link, ())
        if link.state == "awaiting_token_exchange":
            self._links.set_state(link, "connected", None)
            link.last_synced_at = now
            accounts = link.products.get("accounts")
            if accounts is not None:
                accounts.refreshed_at = now
                accounts.last_attempted_at = now
            refresh = self._links.prefetch(link)
        return Exchanged(link, refresh)

    # ------------------------------------------------------------------------- Connect (UI)
    def connect_session(
        self, token: str | None, mode: str, *, allow_completed: bool = False
    ) -> LinkSession:
        """The session behind a Connect page, checked against the page's mode.

        ``mode`` is the launcher path: ``start`` (link), ``relink`` or ``continue``. A finished
        session can only be reopened through ``continue`` (or re-read with ``allow_completed``,
        which keeps a repeated "complete" call idempotent).
        """
        session = self.link_sessions.get(token or "")
        if session is None:
            raise ConnectError(
                401,
                "invalid_link_session",
                "This link session is not valid. Please close this window and start again.",
            )
        if session.status != "completed" and session.expires_at <= self._clock():
            raise ConnectError(
                401,
                "link_session_expired",
                "This link session has expired. Please close this window and start again.",
            )
        if mode == "start" and session.is_relink:
            raise ConnectError(
                400,
                "invalid_link_session",
                "This link session repairs an existing connection; open it with relink().",
            )
        if mode == "relink" and not session.is_relink:
            raise ConnectError(
                400,
                "invalid_link_session",
                "This link session is for a new connection; open it with link().",
            )
        if mode != "continue" and session.status == "completed" and not allow_completed:
            raise ConnectError(
                400, "link_session_completed", "This link session has already been completed."
            )
        if session.is_relink:
            assert session.existing_link_id is not None
            link = self._links.links.get(session.existing_link_id)
            if link is None or link.state == "deleted":
                raise ConnectError(
                    410,
                    "link_deleted",
                    "The connection you are trying to repair no longer exists.",
                )
        return session

    def offered_institutions(self, session: LinkSession) -> list[Institution]:
        """Institutions the picker shows, narrowed by the session's required products/countries."""
        required = [
            name
            for name, product in (session.settings.get("products") or {}).items()
            if product.get("required")
        ]
        countries = session.settings.get("countries")
        return [
            inst
            for inst in self._catalogue.institutions.values()
            if all(p in inst.products for p in required)
            and (not countries or inst.country in countries)
        ]

    def relink_target(self, session: LinkSession) -> tuple[Link, Institution]:
        assert session.existing_link_id is not None
        link = self._links.link(session.existing_link_id)
        return link, self._catalogue.institutions[link.institution_id]

    def connect_institution(
        self, session: LinkSession, institution_id: str, username: str | None, password: str | None
    ) -> LoginOutcome:
        """Log in to an institution (first step after choosing it in Connect).

        Returns candidate accounts (new link), the finished result (relink), or the next step the
        page must show: the MFA screen or the bank's OAuth page.
        """
        inst, link = self._login_target(session, institution_id)
        if self._catalogue.is_down(inst.institution_id):
            raise ConnectError(
                503,
                "institution_down",
                f"{inst.name} is not responding right now. Please try again later.",
            )
        if inst.auth == "oauth":
            session.oauth_state = secrets.token_urlsafe(18)
            session.oauth_institution_id = inst.institution_id
            session.oauth_outcome = None
            return OAuthRequired(inst, session.oauth_state)
        if inst.auth == "credentials":
            if username == LOCKED_USERNAME:
                raise ConnectError(
                    400,
                    "user_setup_required",
                    "Your account is locked. Visit your bank's website to unlock it, "
                    "then try again.",
                )
            if (username, password) == (MFA_USERNAME, GOOD_PASSWORD):
                session.mfa_institution_id = inst.institution_id
                session.challenge = "mfa"
                return MfaRequired(inst, "mfa")
            if (username, password) == (OTP_USERNAME, GOOD_PASSWORD):
                session.mfa_institution_id = inst.institution_id
                session.challenge = "otp_device"
                return MfaRequired(inst, "otp_device")
            if (username, password) != (GOOD_USERNAME, GOOD_PASSWORD):
                raise ConnectError(
                    400,
                    "invalid_credentials",
                    "The username or password you entered is incorrect. Please try again.",
                )
        return self._logged_in(session, inst, link)

    def submit_otp_device(self, session: LinkSession, device_id: str) -> LoginOutcome:
        """The device the one-time code goes to; next the page asks for that code."""
        if session.status == "completed" or session.challenge != "otp_device":
            raise ConnectError(400, "invalid_request", "No code delivery was requested.")
        assert session.mfa_institution_id is not None
        inst, _link = self._login_target(session, session.mfa_institution_id)
        if device_id not in {device["device_id"] for device in OTP_DEVICES}:
            raise ConnectError(400, "invalid_request", "Choose where to send the code.")
        session.challenge = "otp"
        return MfaRequired(inst, "otp")

    def submit_mfa(self, session: LinkSession, code: str) -> LoginOutcome:
        """The code of an MFA or one-time-code challenge."""
        if (
            session.status == "completed"
            or session.mfa_institution_id is None
            or session.challenge not in ("mfa", "otp")
        ):
            raise ConnectError(400, "invalid_request", "No verification code was requested.")
        inst, link = self._login_target(session, session.mfa_institution_id)
        if code.strip() != MFA_CODE:
            raise ConnectError(
                400,
                "user_input_incorrect",
                "The code you entered is incorrect. Please try again.",
            )
        session.mfa_institution_id = None
        session.challenge = None
        return self._logged_in(session, inst, link)

    def permissions(self, session: LinkSession) -> list[dict[str, Any]]:
        """The products a new link asks the user for: the Permissions screen's rows.

        ``required`` (or ``require_permission``) products cannot be declined; the others can.
        Empty when the session asked for no product (the link gets the defaults, no screen).
        """
        if session.is_relink:
            return []
        requested: dict[str, dict[str, Any]] = dict(session.settings.get("products") or {})
        return [
            {
                "product": name,
                "required": bool(settings.get("required") or settings.get("require_permission")),
                "reason": settings.get("reason"),
            }
            for name, settings in requested.items()
        ]

    def grant_permissions(self, session: LinkSession, products: list[str]) -> list[str]:
        """The user's answer on the Permissions screen (before choosing accounts)."""
        if session.status == "completed" or session.is_relink:
            raise ConnectError(400, "invalid_request", "No permissions were asked for.")
        rows = {row["product"]: row for row in self.permissions(session)}
        unknown = [p for p in products if p not in rows]
        missing = [p for p, row in rows.items() if row["required"] and p not in products]
        if unknown or missing:
            raise ConnectError(
                400,
                "invalid_request",
                "This data is needed to connect: " + ", ".join(missing or unknown) + ".",
            )
        session.granted_products = list(dict.fromkeys(products))
        return session.granted_products

    def oauth_decide(self, oauth_state: str, approved: bool) -> tuple[LinkSession, str]:
        """The bank's consent answer; returns the session and where the bank redirects to."""
        session = next(
            (s for s in self.link_sessions.values() if s.oauth_state == oauth_state), None
        )
        if session is None or session.status == "completed":
            raise ConnectError(400, "invalid_request", "This authorisation request is not valid.")
        session.oauth_outcome = "approved" if approved else "denied"
        params = {"state": oauth_state}
        if approved:
            params["code"] = f"oac_{secrets.token_urlsafe(12)}"
        else:
            params["error"] = "access_denied"
        joiner = "&" if "?" in session.redirect_uri else "?"
        return session, session.redirect_uri + joiner + urlencode(params)

    def oauth_session(self, oauth_state: str) -> LinkSession | None:
        return next((s for s in self.link_sessions.values() if s.oauth_state == oauth_state), None)

    def finish_oauth(self, session: LinkSession, redirect_url: str) -> LoginOutcome:
        """Resume after the bank: ``redirect_url`` is the return page's URL with our params."""
        if session.status == "completed":
            return self.connect_result(session)
        query = parse_qs(urlsplit(redirect_url).query)
        returned_state = (query.get("state") or [""])[0]
        if not session.oauth_state or returned_state != session.oauth_state:
            raise ConnectError(
                400, "invalid_request", "The bank's answer does not match this session."
            )
        if session.oauth_outcome is None:
            raise ConnectError(400, "invalid_request", "The bank has not answered yet.")
        assert session.oauth_institution_id is not None
        inst, link = self._login_target(session, session.oauth_institution_id)
        if session.oauth_outcome == "denied" or "error" in query:
            raise ConnectError(
                400,
                "user_oauth_denied",
                f"You did not give permission at {inst.name}. Please try again.",
            )
        if session.candidate_accounts and session.chosen_institution_id == inst.institution_id:
            # Both windows may resume the same flow; the second gets the same accounts.
            return session.candidate_accounts
        return self._logged_in(session, inst, link)

    def _login_target(
        self, session: LinkSession, institution_id: str
    ) -> tuple[Institution, Link | None]:
        if session.status == "completed":
            raise ConnectError(
                400, "link_session_completed", "This link session has already been completed."
            )
        if session.is_relink:
            link, inst = self.relink_target(session)
            if institution_id != inst.institution_id:
                raise ConnectError(
                    400, "institution_mismatch", "A relink must use the link's own institution."
                )
            return inst, link
        offered = {i.institution_id: i for i in self.offered_institutions(session)}
        if institution_id not in offered:
            raise ConnectError(
                400,
                "institution_not_available",
                "This institution is not available for this connection.",
            )
        return offered[institution_id], None

    def _logged_in(
        self, session: LinkSession, inst: Institution, link: Link | None
    ) -> ConnectResult | list[Account]:
        if link is not None:
            return self._complete_relink(session, link, inst)
        now = self._clock()
        session.chosen_institution_id = inst.institution_id
        if session.custom_accounts:
            session.candidate_accounts = custom_accounts(
                self._seeded.rng, inst, session.custom_accounts, now
            )
        else:
            session.candidate_accounts = make_accounts(
                self._seeded.rng, inst, self._seeded.rng.randint(2, 3), now
            )
        return session.candidate_accounts

    def _session_products(
        self, session: LinkSession, inst: Institution
    ) -> dict[str, ProductStatus]:
        requested: dict[str, dict[str, Any]] = dict(session.settings.get("products") or {})
        if session.granted_products is not None:
            granted = set(session.granted_products)
            requested = {name: opts for name, opts in requested.items() if name in granted}
        asked = requested or session.settings.get("products")
        names = ["accounts", *requested] if asked else list(DEFAULT_SESSION_PRODUCTS)
        products: dict[str, ProductStatus] = {}
        for name in names:
            if name in inst.products and name not in products:
                products[name] = ProductStatus(settings=dict(requested.get(name, {})))
        return products

    def _complete_relink(
        self, session: LinkSession, link: Link, inst: Institution
    ) -> ConnectResult:
        now = self._clock()
        link.last_synced_at = now
        # Protocol §3.4: webhook and tags are replaced by the session's, removed when omitted.
        link.webhook = session.webhook
        link.link_tags = list(session.link_tags) if session.link_tags is not None else None
        for name, status in self._session_products(session, inst).items():
            link.products.setdefault(name, status)
        for status in link.products.values():
            status.error_code = None
            status.refreshed_at = now
            status.last_attempted_at = now
        self._links.set_state(link, "connected", None)
        session.status = "completed"
        session.chosen_institution_id = inst.institution_id
        session.result_link_id = link.link_id
        return ConnectResult(link=link, institution=inst, exchangeable_token=None, selected=[])

    def complete_link(self, session: LinkSession, account_ids: list[str]) -> ConnectResult:
        """Finish a new link with the accounts the user kept; idempotent for a finished session."""
        if session.status == "completed":
            return self.connect_result(session)
        if session.is_relink or session.chosen_institution_id is None:
            raise ConnectError(400, "invalid_request", "Choose an institution and log in first.")
        chosen = [a for a in session.candidate_accounts if a.account_id in set(account_ids)]
        if not chosen:
            raise ConnectError(400, "no_accounts_selected", "Select at least one account.")
        inst = self._catalogue.institutions[session.chosen_institution_id]
        link = self._links.add_link(
            inst=inst,
            customer_id=str(session.customer_user.get("id", "")),
            state="awaiting_token_exchange",
            link_tags=list(session.link_tags) if session.link_tags is not None else None,
            webhook=session.webhook,
            products=self._session_products(session, inst),
            accounts=chosen,
        )
        link.owners = session.owners
        if link.webhook:
            # The link exists from here on; its webhook URL hears about it right away.
            self._events.state_changed(link)
        token = f"ext_{secrets.token_urlsafe(24)}"
        self.exchangeable_tokens[token] = ExchangeableToken(
            link_id=link.link_id, created_at=self._clock()
        )
        session.status = "completed"
        session.result_link_id = link.link_id
        session.result_token = token
        return ConnectResult(link=link, institution=inst, exchangeable_token=token, selected=chosen)

    def connect_result(self, session: LinkSession) -> ConnectResult:
        assert session.result_link_id is not None
        link = self._links.links[session.result_link_id]
        inst = self._catalogue.institutions[link.institution_id]
        return ConnectResult(
            link=link,
            institution=inst,
            exchangeable_token=session.result_token,
            selected=list(link.accounts) if not session.is_relink else [],
        )
