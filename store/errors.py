"""The store's exceptions: the caller's mistake, named so the API can map them to 4xx."""


class StoreError(Exception):
    """Base of every store error."""


class NotFound(StoreError):
    """The record asked for does not exist."""


class Conflict(StoreError):
    """The write contradicts what is stored (for example a second reward for one decision)."""


class StorageFull(StoreError):
    """The database or its disk is full: nothing was written; the write may succeed later."""
