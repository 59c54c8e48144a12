"""Who may do what: roles, the acting staff member, and local sign-in.

Pages hide buttons a role cannot use, but the check that counts is here: every service that acts
calls :func:`require` first, so a hand-crafted request or a forgotten ``if`` in a page cannot
relink a link as a viewer.

Local users (``LINKDESK_USERS``) are a JSON object::

    {"alice": {"role": "support", "password_sha256": "<64 hex digits>"},
     "bob":   {"role": "admin",   "password_sha256": "<64 hex digits>"}}

``password_sha256`` is ``sha256(password)`` in lower-case hex (``printf %s 'pw' | sha256sum``).
This suits a small internal tool behind the company network; use OIDC (``st.login``) when the
dashboard is reachable from anywhere else.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from linkdesk.errors import ServiceError

__all__ = [
    "PERMISSIONS",
    "Actor",
    "Permission",
    "PermissionDenied",
    "Role",
    "allowed",
    "as_actor",
    "load_users",
    "require",
    "verify_local_password",
]

logger = logging.getLogger("linkdesk.auth")


class Role(enum.StrEnum):
    VIEWER = "viewer"
    SUPPORT = "support"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    START_LINK = "link.start"
    RELINK = "link.relink"
    RELINK_TAKE_OVER = "link.relink_take_over"
    CUSTOMER_LINK = "customer_link.create"
    NOTE = "note.add"
    SYNC_TRIGGER = "sync.trigger"
    WORKER_CONTROL = "worker.control"
    DEMO_RESET = "demo.reset"
    DEMO_SCENARIO = "demo.scenario"
    SETTINGS = "settings.change"
    ALERT_RESPOND = "alert.respond"


_SUPPORT = frozenset({Role.SUPPORT, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})

# Viewers read only. Support repairs links for customers; admins also run the machinery.
PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.START_LINK: _SUPPORT,
    Permission.RELINK: _SUPPORT,
    # Ending someone else's relink reservation; audited with the reason.
    Permission.RELINK_TAKE_OVER: _ADMIN,
    Permission.CUSTOMER_LINK: _SUPPORT,
    Permission.NOTE: _SUPPORT,
    Permission.SYNC_TRIGGER: _ADMIN,
    Permission.WORKER_CONTROL: _ADMIN,
    Permission.DEMO_RESET: _ADMIN,
    # Presenters sign in as support or admin; viewers watch.
    Permission.DEMO_SCENARIO: _SUPPORT,
    # Acknowledging and silencing alerts is part of responding to them; editing rules is SETTINGS.
    Permission.ALERT_RESPOND: _SUPPORT,
    Permission.SETTINGS: _ADMIN,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """A staff member acting through Linkdesk (name as shown in the audit log)."""

    name: str
    role: Role

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("an actor needs a name")
        object.__setattr__(self, "role", Role(self.role))

    def can(self, permission: Permission) -> bool:
        return allowed(self.role, permission)

    def __str__(self) -> str:
        return self.name


class PermissionDenied(ServiceError):
    def __init__(self, actor: Actor, permission: Permission) -> None:
        self.actor = actor
        self.permission = permission
        super().__init__(
            f"{actor.name} ({actor.role.value}) may not do this: {permission.value} needs "
            + " or ".join(sorted(r.value for r in PERMISSIONS[permission]))
            + "."
        )


def allowed(role: Role | str, permission: Permission) -> bool:
    try:
        return Role(role) in PERMISSIONS[permission]
    except ValueError:
        return False


def require(actor: Actor, permission: Permission) -> None:
    """Raise :class:`PermissionDenied` unless ``actor``'s role grants ``permission``."""
    if not actor.can(permission):
        raise PermissionDenied(actor, permission)


def as_actor(actor: Actor | str, default_role: Role | str = Role.SUPPORT) -> Actor:
    """The :class:`Actor` for ``actor``; a bare name (older callers) gets ``default_role``.

    Bare names are accepted so the dashboard keeps working until it signs users in; they are
    deprecated because the role then comes from configuration, not from the person.
    """
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        warnings.warn(
            "pass an Actor(name, role) instead of a bare actor name",
            DeprecationWarning,
            stacklevel=3,
        )
        return Actor(actor, Role(default_role))
    raise TypeError(f"actor must be an Actor, got {type(actor).__name__}")


def load_users(raw: str | Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Parse the users setting (JSON text or a mapping); malformed entries are left out."""
    if raw is None or raw == "":
        return {}
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError:
            logger.warning("LINKDESK_USERS is not valid JSON; no local users are configured")
            return {}
    if not isinstance(data, Mapping):
        return {}
    users: dict[str, dict[str, str]] = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not isinstance(entry, Mapping):
            continue
        role, digest = entry.get("role"), entry.get("password_sha256")
        if not isinstance(role, str) or not isinstance(digest, str):
            continue
        if role not in {r.value for r in Role} or len(digest) != 64:
            logger.warning("local user %r has an unknown role or a malformed hash; ignored", name)
            continue
        users[name] = {"role": role, "password_sha256": digest.lower()}
    return users


# Compared against when the user does not exist, so a wrong name costs as much as a wrong password.
_DUMMY_DIGEST = hashlib.sha256(b"linkdesk-no-such-user").hexdigest()


def verify_local_password(
    users_config: str | Mapping[str, Any] | None, username: str, password: str
) -> Actor | None:
    """The signed-in :class:`Actor`, or None when the name or password is wrong.

    The comparison takes the same time whether the user exists or not; nothing about the
    password is logged.
    """
    users = load_users(users_config)
    entry = users.get(username)
    expected = entry["password_sha256"] if entry else _DUMMY_DIGEST
    given = hashlib.sha256(password.encode("utf-8")).hexdigest()
    matches = hmac.compare_digest(given.encode(), expected.encode())
    if entry is None or not matches:
        logger.info("local sign-in refused for %r", username[:100])
        return None
    return Actor(username, Role(entry["role"]))
