"""The vector index protocol every backend implements, its filter and hit types, shared helpers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from store.schemas import Item

VECTOR_NAME = "content"
"""The named vector holding item text embeddings; other vectors can join it in the collection."""

ITEM_NAMESPACE = uuid.UUID("e778a2a9-dc17-4731-a52b-13a6201ee94e")
"""Namespace for the point ids: Qdrant only takes unsigned integers or UUIDs as ids."""

UPSERT_BATCH_SIZE = 256


class RetrievalError(Exception):
    """Base of the errors raised by the retrieval package."""


class IndexConfigError(RetrievalError):
    """The stored index does not match what the caller asked for (dimension, vector name)."""


class IndexUnavailable(RetrievalError):
    """The vector store cannot be reached or failed on its side; retrying later may succeed."""


@dataclass(frozen=True)
class ItemFilter:
    """Constraints a search pushes down into the vector store. Empty fields constrain nothing.

    Attributes:
        categories: Only items in one of these categories; empty means any category.
        exclude_ids: Items never to return, e.g. ones the person already bought.
        max_min_age: Only items whose `min_age` is at most this, i.e. the person's age.
        in_stock_only: Only items with stock left.
        max_price: Only items priced at most this.
    """

    categories: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()
    max_min_age: int | None = None
    in_stock_only: bool = False
    max_price: float | None = None

    def __post_init__(self) -> None:
        for name in ("categories", "exclude_ids"):
            value = getattr(self, name)
            # A bare string would otherwise become a tuple of its characters.
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence of strings, e.g. ({value!r},)")
            object.__setattr__(self, name, tuple(value))
        if self.max_min_age is not None and self.max_min_age < 0:
            raise ValueError(f"max_min_age must be 0 or more, got {self.max_min_age}")
        if self.max_price is not None and not (
            math.isfinite(self.max_price) and self.max_price >= 0
        ):
            raise ValueError(f"max_price must be a finite number >= 0, got {self.max_price}")


@dataclass(frozen=True)
class Hit:
    """One search result: the item id, its cosine similarity to the query and its payload."""

    item_id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = field(default=None, compare=False)


@runtime_checkable
class VectorIndex(Protocol):
    """A store of item vectors with their payload, searched by cosine similarity."""

    backend: str
    dim: int

    def upsert(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        """Stores items with their vectors (row i belongs to items[i]); idempotent by item_id."""
        ...

    def delete(self, item_ids: Sequence[str]) -> None:
        """Removes items; ids that are not stored are ignored."""
        ...

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int,
        flt: ItemFilter | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The k items nearest to `vector`, best first, among those matching `flt`."""
        ...

    def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by item id; ids that are not stored are absent."""
        ...

    def count(self) -> int:
        """How many items are stored."""
        ...

    def close(self) -> None:
        """Releases the store; the index cannot be used afterwards."""
        ...


def point_id(item_id: str) -> uuid.UUID:
    """The stable point id of an item: the same item_id always maps to the same UUID."""
    return uuid.uuid5(ITEM_NAMESPACE, item_id)


def item_payload(item: Item) -> dict[str, Any]:
    """The payload stored with an item's point: what filters and callers need, no description."""
    return {
        "item_id": item.item_id,
        "title": item.title,
        "category": item.category,
        "price": float(item.price),
        "currency": item.currency,
        "margin": float(item.margin),
        "stock": int(item.stock),
        "in_stock": item.stock > 0,
        "min_age": int(item.min_age),
        "tags": list(item.tags),
    }


def check_batch(items: Sequence[Item], vectors: np.ndarray, dim: int) -> np.ndarray:
    """Validates an upsert batch and returns the vectors as a float32 (n, dim) array."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape != (len(items), dim):
        raise ValueError(
            f"vectors must have shape ({len(items)}, {dim}), one row per item, "
            f"got {tuple(array.shape)}"
        )
    return array


def check_query(vector: np.ndarray, dim: int, k: int) -> list[float]:
    """Validates a query vector and k, and returns the vector as a list of floats."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"query vector must have shape ({dim},), got {tuple(array.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return array.tolist()


def named_vector(vector: Any) -> np.ndarray:
    """The content vector out of a point's named vectors, as returned by either backend."""
    if not isinstance(vector, dict) or VECTOR_NAME not in vector:
        raise RetrievalError(f"the vector store returned no {VECTOR_NAME!r} vector for a point")
    return np.asarray(vector[VECTOR_NAME], dtype=np.float32)


def to_hit(point: Any, with_vectors: bool) -> Hit:
    """A Hit from a scored point of either backend (both expose id, score, payload, vector)."""
    if point.payload is None:
        raise RetrievalError(f"the vector store returned point {point.id} without its payload")
    return Hit(
        item_id=point.payload["item_id"],
        score=float(point.score),
        payload=dict(point.payload),
        vector=named_vector(point.vector) if with_vectors else None,
    )
