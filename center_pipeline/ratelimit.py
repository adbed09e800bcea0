"""A request-rate limit that the worker threads of one run share."""

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces request starts at least `1 / rate_per_second` seconds apart, across threads.

    Each `acquire` reserves the next free start time under a lock and then sleeps without
    the lock, so callers start in the order they arrived and never share a slot. An idle
    period earns no credit. After one, the next request starts at once and the request
    after it waits a full interval, so every two consecutive starts are an interval apart.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create a limiter of `rate_per_second` request starts a second.

        Args:
            rate_per_second: Maximum request starts per second. 0.5 means one every 2 s.
            clock: Monotonic clock in seconds, replaceable in tests.
            sleep: Function that blocks for the given seconds, replaceable in tests.

        Raises:
            ValueError: The rate is not a positive finite number.
        """
        if not math.isfinite(rate_per_second) or rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive and finite, got {rate_per_second}")
        self.rate_per_second = rate_per_second
        self._interval = 1.0 / rate_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = -math.inf
        self.delayed_requests = 0
        self.delay_seconds = 0.0

    def acquire(self) -> float:
        """Block until this caller may start a request, and return the seconds it waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
            wait = start - now
            if wait > 0:
                self.delayed_requests += 1
                self.delay_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait


def rate_limiter_or_none(rate_per_second: float | None) -> RateLimiter | None:
    """Build a limiter for the rate, or return None when no rate is set."""
    return RateLimiter(rate_per_second) if rate_per_second is not None else None
