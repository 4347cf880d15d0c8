"""The run's overall deadline and the retry schedule every backend shares."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

# Backoff bounds for transient backend failures (throttling, 5xx, connection errors).
RETRY_BASE_SECONDS = 0.1
RETRY_CAP_SECONDS = 5.0


@dataclass
class Deadline:
    """A point in monotonic time after which the fetch phase gives up."""

    expires_at: float
    seconds: float = field(default=0.0)

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        """Return the seconds left, never negative."""
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def backoff_delays(deadline: Deadline, *, base: float = RETRY_BASE_SECONDS,
                   cap: float = RETRY_CAP_SECONDS,
                   rng: Callable[[float, float], float] = random.uniform) -> Iterator[float]:
    """Yield sleep times for retry attempts: exponential backoff with full jitter.

    Each delay is uniform in [0, min(cap, base * 2**attempt)], cut to the time the deadline
    leaves. The iterator stops once the deadline has passed, so a caller's loop
    ``for delay in backoff_delays(d): ...`` ends by itself.
    """
    attempt = 0
    while not deadline.expired():
        delay = rng(0.0, min(cap, base * (2 ** attempt)))
        yield min(delay, deadline.remaining())
        attempt += 1


def retry_after_seconds(header: str | None, deadline: Deadline) -> float | None:
    """Parse a Retry-After header given in seconds; None when absent or not a number.

    NOTE: the HTTP-date form of Retry-After is not parsed; Vault and AWS send seconds.
    """
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return max(0.0, min(seconds, deadline.remaining()))
