"""The circuit breaker in front of the model server: one per upstream and process (the factory
builds it once); it opens after N consecutive failures, fails fast while open, and lets one probe
through after a cooldown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agents.llm.errors import CircuitOpen


class CircuitBreaker:
    """Closed → open after `failures` consecutive failures → half-open after `cooldown_s`: one
    probe goes through; its success closes the breaker, its failure opens it again. Shared by
    every caller of one upstream in the process; thread-safe."""

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a circuit breaker needs failures >= 1 and cooldown_s > 0")
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
                return "half-open"
            return "open"

    def acquire(self) -> None:
        """Let one attempt through, or raise `CircuitOpen`. Every acquired attempt must end in
        `success()` or `failure()`."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if self._probing or waited < self.cooldown_s:
                wait = max(0.0, self.cooldown_s - waited)
                raise CircuitOpen(
                    f"circuit breaker open after {self._failures} consecutive failures of the "
                    + (
                        "model server; a probe is in flight"
                        if self._probing
                        else f"model server; next probe in {wait:.1f} s"
                    )
                )
            self._probing = True

    def release(self) -> None:
        """End an attempt that says nothing about the server (a bug on our side): the probe
        slot is freed, nothing is counted."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.threshold:
                self._opened_at = self._clock()
            self._probing = False
