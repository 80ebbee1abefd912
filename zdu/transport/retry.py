"""Small, composable retry policies (tenacity-style) with an injectable sleep.

    policy = Backoff(retries=3, initial=0.5, factor=2.0, maximum=8.0)
    value = retry_call(connect, policy=policy, retry_if=is_transient, sleep=fake_sleep)

``retries`` counts the *extra* attempts: ``retries=3`` means at most four calls and
three sleeps (0.5, 1, 2 s).  Tests pass their own ``sleep`` and never wait.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial * factor**n`` seconds, capped at ``maximum``."""

    retries: int = 3
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 8.0

    def delays(self) -> Iterator[float]:
        """The wait before each retry, in order (``retries`` values)."""
        delay = self.initial
        for _ in range(max(0, self.retries)):
            yield min(delay, self.maximum)
            delay *= self.factor


def retry_call(fn: Callable[[], T], *, policy: Backoff,
               retry_if: Callable[[BaseException], bool],
               sleep: Sleep = time.sleep,
               on_retry: Callable[[int, BaseException, float], None] | None = None,
               give_up: Callable[[], bool] = lambda: False) -> T:
    """Call ``fn`` until it returns, retrying errors for which ``retry_if`` is true.

    Errors that are not retryable, and the last error once the policy is exhausted or
    ``give_up()`` turns true (checked before and after each sleep), propagate unchanged.
    ``on_retry(attempt, error, delay)`` is told before each sleep.
    """
    delays = policy.delays()
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the predicate decides
            if not retry_if(exc):
                raise
            delay = next(delays, None)
            if delay is None or give_up():
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
            if give_up():
                raise
            attempt += 1
