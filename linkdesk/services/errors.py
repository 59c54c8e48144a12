"""Domain errors raised by the services (never HTTP- or UI-specific)."""

from __future__ import annotations

from datetime import datetime

from linkdesk.errors import ServiceError


class LinkNotFound(ServiceError):
    def __init__(self, link_id: str) -> None:
        self.link_id = link_id
        super().__init__(f"Link {link_id} is not known to Linkdesk.")


class LinkUnavailable(ServiceError):
    """MoneyKit answered 404 for a link it should know: not a deletion, so nothing changes."""

    def __init__(self, link_id: str) -> None:
        self.link_id = link_id
        super().__init__(
            f"MoneyKit did not find link {link_id} just now (404). Nothing was changed; "
            "the sync worker reads it again shortly. Try again in a few minutes."
        )


class RelinkNotNeeded(ServiceError):
    def __init__(self, link_id: str, health: str, state: str, error_code: str | None) -> None:
        self.link_id = link_id
        self.health = health
        self.state = state
        self.error_code = error_code
        detail = f"{state}/{error_code}" if error_code else state
        super().__init__(f"Link {link_id} does not need a relink (it is {detail}).")


class LeaseHeld(ServiceError):
    def __init__(self, link_id: str, holder: str, expires_at: datetime) -> None:
        self.link_id = link_id
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(
            f"{holder} is already relinking link {link_id} "
            f"(until {expires_at:%H:%M} UTC unless they finish earlier)."
        )


class LeaseNotHeld(ServiceError):
    """The reservation asked for is not (or no longer) the one in the store."""

    def __init__(self, link_id: str, detail: str) -> None:
        self.link_id = link_id
        super().__init__(f"Link {link_id}: {detail}")


class ReasonRequired(ServiceError):
    """An action that must say why was asked without a reason."""


class UnknownSession(ServiceError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__("This Connect session is not known to Linkdesk.")


class InvalidCustomerId(ServiceError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Invalid customer id: {reason}")


class LinkExpired(ServiceError):
    def __init__(self) -> None:
        super().__init__("This relink link has expired. Ask support for a new one.")


class LinkAlreadyUsed(ServiceError):
    def __init__(self) -> None:
        super().__init__("This relink link has already been used. Ask support for a new one.")


class LinkTampered(ServiceError):
    def __init__(self) -> None:
        super().__init__("This relink link is not valid.")


class LiveLinkExists(ServiceError):
    """A link has at most one live customer relink link: a second one is refused, never made."""

    def __init__(self, link_id: str, created_by: str, expires_at: datetime) -> None:
        self.link_id = link_id
        self.created_by = created_by
        self.expires_at = expires_at
        super().__init__(
            f"Link {link_id} already has a live customer relink link (sent by {created_by}, "
            f"valid until {expires_at:%Y-%m-%d %H:%M} UTC); no second one is made."
        )
