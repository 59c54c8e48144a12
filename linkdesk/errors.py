"""The root of Linkdesk's domain errors, outside any package so every module can import it."""

from __future__ import annotations

__all__ = ["ServiceError"]


class ServiceError(Exception):
    """Root of the service-layer errors; ``str()`` is a sentence safe to show staff."""
