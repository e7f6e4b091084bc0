"""A bounded LRU keyed by a text's keyed digest: remembers what was found in a text, not the text."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["DigestLRU", "digest"]

V = TypeVar("V")


def digest(text: str, key: bytes = b"") -> bytes:
    """A 128-bit BLAKE2b digest of the text, keyed by `key`: the cache holds no raw text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=key).digest()


class DigestLRU(Generic[V]):
    """At most `size` values by the digest of the text they were computed from, least recently
    used first out. Safe to share between threads (requests may run in a thread pool).

    A value is a pure function of its text and of the object that owns the cache, so an entry
    can never go stale: there is nothing to invalidate, only to evict. The digests are keyed by a
    random key of this cache's own, held only in memory, so that a short text (a phone number in
    a shopper's message) cannot be found from its digest by trying candidates.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._key = os.urandom(16)
        self._values: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> V | None:
        key = digest(text, self._key)
        with self._lock:
            value = self._values.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._values.move_to_end(key)
            return value

    def put(self, text: str, value: V) -> None:
        key = digest(text, self._key)
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return (
            f"DigestLRU(size={self.size}, held={len(self)}, hits={self.hits}, misses={self.misses})"
        )
