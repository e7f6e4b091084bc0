"""When to try the model server again: exponential backoff with jitter, or the server's own
Retry-After."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 429 and 5xx: attempt n waits a uniform draw in [½, 1] × min(cap, base · 2ⁿ),
    or the server's Retry-After; never past the deadline."""

    max_retries: int = 2
    base_s: float = 0.2
    cap_s: float = 2.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        return ceiling * rng.uniform(0.5, 1.0)


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None
