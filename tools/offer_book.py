"""The offer set, read from the store at most every few seconds instead of on every decision.

Offers change rarely and every worker must see a change soon, not at once: a short time-to-live
keeps several workers consistent within `ttl_s` without a cache-invalidation channel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from store.catalog import all_offers
from store.db import Database
from store.schemas import Offer


class OfferBook:
    def __init__(
        self, db: Database, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._offers: list[Offer] = []
        self._loaded_at: float | None = None

    def current(self) -> list[Offer]:
        """All offers, as stored at most `ttl_s` seconds ago."""
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self._ttl:
                with self._db.session() as session:
                    self._offers = all_offers(session)
                self._loaded_at = now
            return self._offers

    def invalidate(self) -> None:
        """Forget the cached set, e.g. right after this process wrote offers."""
        with self._lock:
            self._loaded_at = None
