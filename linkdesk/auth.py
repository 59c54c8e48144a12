"""Who may do what: roles, the acting staff member, and local sign-in.

Pages hide buttons a role cannot use, but the check that counts is here: every service that acts
calls :func:`require` first, so a hand-crafted request or a forgotten ``if`` in a page cannot
relink a link as a viewer.

Local users live in the store (``python -m linkdesk user add NAME --role support``), or in
``LINKDESK_USERS`` / the secrets file as a JSON object::

    {"alice": {"role": "support", "password_hash": "$argon2id$v=19$..."}}

Passwords are kept only as argon2id hashes (salted, deliberately slow). Entries written for older
versions (``password_sha256``, an unsalted SHA-256) still sign in, with a loud warning naming the
user, until an admin replaces them.
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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from linkdesk.errors import ServiceError

__all__ = [
    "PERMISSIONS",
    "Actor",
    "Permission",
    "PermissionDenied",
    "Role",
    "allowed",
    "as_actor",
    "hash_password",
    "load_users",
    "password_matches",
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


_HASHER = PasswordHasher()  # argon2id with argon2-cffi's current parameters (RFC 9106 low-memory)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; the PHC string holds salt and parameters)."""
    if not password:
        raise ValueError("a password cannot be empty")
    return _HASHER.hash(password)


def load_users(raw: str | Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Parse the users setting (JSON text or a mapping); malformed entries are left out.

    Each entry has a ``role`` and either ``password_hash`` (argon2id, from ``python -m linkdesk
    user add``) or, from older configurations, ``password_sha256``.
    """
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
        role = entry.get("role")
        argon, digest = entry.get("password_hash"), entry.get("password_sha256")
        if not isinstance(role, str) or role not in {r.value for r in Role}:
            logger.warning("local user %r has an unknown role; ignored", name[:100])
            continue
        if isinstance(argon, str) and argon.startswith("$argon2id$"):
            users[name] = {"role": role, "password_hash": argon}
        elif isinstance(digest, str) and len(digest) == 64:
            users[name] = {"role": role, "password_sha256": digest.lower()}
        else:
            logger.warning("local user %r has no usable password hash; ignored", name[:100])
    return users


# Checked when the user does not exist, so a wrong name costs as much as a wrong password.
_DUMMY_HASH = _HASHER.hash("linkdesk-no-such-user")


def password_matches(entry: Mapping[str, str] | None, username: str, password: str) -> bool:
    """Whether ``password`` fits the stored entry; takes an argon2 check's time either way.

    An unsalted SHA-256 entry still signs in (so an upgrade locks nobody out) but logs a
    WARNING naming the user, never the hash, each time, until the entry is replaced.
    """
    if entry is not None and "password_sha256" in entry:
        _argon2_matches(_DUMMY_HASH, password)  # the same cost as a real check
        logger.warning(
            "local user %r signs in with an unsalted SHA-256 password hash; replace it with an "
            "argon2id entry (python -m linkdesk user add %s --role %s)",
            username[:100],
            username[:100],
            entry.get("role", "viewer"),
        )
        given = hashlib.sha256(password.encode("utf-8")).hexdigest()
        return hmac.compare_digest(given.encode(), entry["password_sha256"].encode())
    stored = entry.get("password_hash") if entry is not None else None
    matches = _argon2_matches(stored or _DUMMY_HASH, password)
    return entry is not None and stored is not None and matches


def _argon2_matches(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify_local_password(
    users_config: str | Mapping[str, Any] | None, username: str, password: str
) -> Actor | None:
    """The signed-in :class:`Actor`, or None when the name or password is wrong.

    The check takes the same time whether the user exists or not; nothing about the password
    is logged.
    """
    users = load_users(users_config)
    entry = users.get(username)
    if not password_matches(entry, username, password) or entry is None:
        logger.info("local sign-in refused for %r", username[:100])
        return None
    return Actor(username, Role(entry["role"]))
