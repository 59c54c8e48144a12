"""Use cases: Connect sessions, discovery sync, audit. Dependencies come in as arguments."""

from linkdesk.services.audit import AuditLog
from linkdesk.services.connect import ApplyOutcome, ConnectService, StartedSession, exit_message
from linkdesk.services.discovery import DiscoveryService, SyncFailure, SyncReport
from linkdesk.services.errors import (
    InvalidCustomerId,
    LeaseHeld,
    LeaseNotHeld,
    LinkNotFound,
    LinkUnavailable,
    ReasonRequired,
    RelinkNotNeeded,
    ServiceError,
    UnknownSession,
)

__all__ = [
    "ApplyOutcome",
    "AuditLog",
    "ConnectService",
    "DiscoveryService",
    "InvalidCustomerId",
    "LeaseHeld",
    "LeaseNotHeld",
    "LinkNotFound",
    "LinkUnavailable",
    "ReasonRequired",
    "RelinkNotNeeded",
    "ServiceError",
    "StartedSession",
    "SyncFailure",
    "SyncReport",
    "UnknownSession",
    "exit_message",
]
