"""Backoff with jitter and a circuit breaker for talking to the control plane.

Exponential backoff with "full jitter" (AWS architecture blog): a fleet of runners that lost the control
plane at the same moment must not come back at the same moment. The breaker stops all requests for a
while after many consecutive failures, so a long outage costs one probe per period, not a retry storm.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class Backoff:
    """Delays from ``minimum`` doubling up to ``maximum``, each drawn uniformly in [minimum, cap]."""

    def __init__(self, minimum: float, maximum: float, *, rng: random.Random | None = None) -> None:
        self.minimum = max(minimum, 0.001)
        self.maximum = max(maximum, self.minimum)
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self) -> float:
        cap = min(self.maximum, self.minimum * (2 ** min(self.failures, 32)))
        self.failures += 1
        return self._rng.uniform(self.minimum, cap)

    def reset(self) -> None:
        self.failures = 0


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``open_s`` (one probe)."""

    def __init__(self, threshold: int, open_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(threshold, 1)
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if self._clock() - self._opened_at < self.open_s else "half-open"

    def wait_s(self) -> float:
        """Seconds until a request may be tried (0 when closed or half-open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.open_s - (self._clock() - self._opened_at))

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def failure(self) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the breaker."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = self._clock()
                return True
            return False
