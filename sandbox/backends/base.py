"""What every backend shares: the sandbox clock and the seeded random source.

Both are owned by the :class:`~sandbox.state.SandboxState` facade and handed to each backend, so a
clock offset or a reset with a new seed reaches every area at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class Seeded:
    """The seed and the one random source drawn from it; a reset draws again from the start."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def reseed(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        self.rng = random.Random(self.seed)
