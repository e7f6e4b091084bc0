"""The vector index protocol every backend implements, its filter and hit types, shared helpers."""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from store.schemas import Item

VECTOR_NAME = "content"
"""The named vector holding item text embeddings (cosine)."""

COLLAB_VECTOR = "collab"
"""The named vector holding collaborative item factors (dot product), learned from interactions.
Items without interactions yet have none: only the content vector finds them (cold start)."""

LEXICAL_VECTOR = "lexical"
"""The sparse vector holding each item's BM25 term weights (Qdrant's BM25 model, IDF applied by
Qdrant at query time), so keyword matches and dense neighbours fuse inside one query."""

LEXICAL_AVG_LEN = 24.0
"""BM25's expected document length in tokens: about a title, a short description and tags."""

DEFAULT_COLLAB_DIM = 64
RRF_K = 60
"""Reciprocal rank fusion constant. Qdrant scores an item at 0-based position p of a source with
weight w as 1 / ((p + 1) / w + RRF_K - 1): weight 3 makes position 2 count as position 0 would."""

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


@dataclass(frozen=True, init=False)
class Hit:
    """One search result: the item id, its score and payload, and its vectors when asked for.

    The score is the cosine similarity (content), the dot product (collab), or the fusion score
    of a fused search (reciprocal rank fusion; a match alone scores by its own `fusion`).
    """

    item_id: str
    score: float
    payload: dict[str, Any]
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)

    def __init__(
        self,
        item_id: str,
        score: float,
        payload: dict[str, Any],
        vectors: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        # A ranking builds a few hundred hits: the fields are set in the instance's dict, which
        # costs half of what the frozen dataclass's `object.__setattr__` per field does.
        fields = self.__dict__
        fields["item_id"] = item_id
        fields["score"] = score
        fields["payload"] = payload
        fields["vectors"] = {} if vectors is None else vectors

    @property
    def vector(self) -> np.ndarray | None:
        """The content vector, when it was asked for."""
        return self.vectors.get(VECTOR_NAME)


@dataclass(frozen=True)
class Source:
    """One input of a fused search and its RRF weight: a query vector for a dense named vector,
    or, for the lexical vector, the query's text (`Source.lexical`), embedded by Qdrant's BM25.

    Attributes:
        threshold: Only items scoring at least this on this source (e.g. a minimum cosine).
    """

    using: str
    vector: np.ndarray | None = None
    weight: float = 1.0
    text: str | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.using not in (VECTOR_NAME, COLLAB_VECTOR, LEXICAL_VECTOR):
            raise ValueError(
                f"using must be {VECTOR_NAME!r}, {COLLAB_VECTOR!r} or {LEXICAL_VECTOR!r}, "
                f"got {self.using!r}"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight}")
        if self.using == LEXICAL_VECTOR and (self.text is None or self.vector is not None):
            raise ValueError("a lexical source takes the query's text, not a vector")
        if self.using != LEXICAL_VECTOR and (self.vector is None or self.text is not None):
            raise ValueError(f"a {self.using!r} source takes a vector, not text")

    @classmethod
    def lexical(cls, text: str, weight: float = 1.0) -> Source:
        return cls(LEXICAL_VECTOR, weight=weight, text=text)

    @property
    def dense(self) -> np.ndarray:
        """The query vector of a dense source."""
        if self.vector is None:
            raise ValueError(f"the {self.using!r} source has no dense vector")
        return self.vector


FUSIONS = ("rrf", "dbsf")
"""How a match fuses its sources inside Qdrant: weighted reciprocal rank fusion of their orders
("rrf"), or distribution-based score fusion of their scores ("dbsf": each source's scores over
its prefetch are mapped to [0, 1] by mean ± 3 standard deviations and summed, unweighted)."""


@dataclass(frozen=True)
class Match:
    """What a request's text matches: its sources (lexical and dense) fused inside Qdrant by
    `fusion` (see `FUSIONS`), cut to `limit` items. A fused search given a Match returns only
    these items; its other sources re-order them rather than adding others, and the match order
    itself weighs `weight`."""

    sources: tuple[Source, ...]
    limit: int = 50
    weight: float = 2.0
    fusion: str = "rrf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ValueError("a match needs at least one source")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion == "dbsf" and any(s.weight != 1.0 for s in self.sources):
            # Qdrant's DBSF takes no weights: a weight would be silently ignored.
            raise ValueError("dbsf fuses its sources unweighted: give each source weight 1.0")


@dataclass(frozen=True)
class FusedSearch:
    """The arguments of one `VectorIndex.fused_search`, to run several in one call
    (`VectorIndex.fused_searches`)."""

    sources: tuple[Source, ...]
    k: int
    flt: ItemFilter | None = None
    prefetch: int = 100
    with_vectors: bool = False
    match: Match | None = None
    with_payload: bool = True
    """False: each hit's payload holds only its `item_id` (see `VectorIndex.search`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources and self.match is None:
            raise ValueError("a fused search needs at least one source")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


class Lexical:
    """Qdrant's BM25 model (English: lower case, stop words, Snowball stemming), as sparse
    vectors: an item's term weights, and a query's terms. Computed in-process by qdrant_edge, so
    both backends index the same vectors; Qdrant applies the IDF at query time."""

    def __init__(self, avg_len: float = LEXICAL_AVG_LEN) -> None:
        import qdrant_edge as qe

        self._bm25 = qe.Bm25(qe.Bm25Config(avg_len=avg_len, language="english"))

    def document(self, item: Item) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_document(lexical_text(item))
        return list(vector.indices), list(vector.values)

    def query(self, text: str) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_query(text)
        return list(vector.indices), list(vector.values)


def lexical_text(item: Item) -> str:
    """The words of an item that keyword search matches: title, category, tags, description."""
    category = item.category.replace("_", " ")
    return f"{item.title} {category} {' '.join(item.tags)} {item.description}"


@runtime_checkable
class VectorIndex(Protocol):
    """A store of item vectors with their payload, searched by cosine similarity."""

    backend: str
    dim: int
    collab_dim: int

    def upsert(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        """Stores items with their content vectors (row i belongs to items[i]); idempotent by
        item_id. A collab vector already stored for an item is kept."""
        ...

    def set_vectors(self, using: str, vectors: Mapping[str, np.ndarray]) -> int:
        """Sets one named vector of stored items; ids not stored are skipped. Returns how many
        were set."""
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
        using: str = VECTOR_NAME,
        with_payload: bool = True,
    ) -> list[Hit]:
        """The k items nearest to `vector` on the named vector `using`, best first, among those
        matching `flt`.

        With `with_payload=False` each hit's payload holds only its `item_id`: a ranking that
        only needs ids and scores does not pay for reading every payload (`hits` reads the
        payloads and vectors of the few that are shown)."""
        ...

    def fused_search(
        self,
        sources: Sequence[Source],
        *,
        k: int,
        flt: ItemFilter | None = None,
        prefetch: int = 100,
        with_vectors: bool = False,
        match: Match | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        """One query inside Qdrant: each source prefetches its `prefetch` nearest items (filter
        pushed into every prefetch), and weighted reciprocal rank fusion ranks their union.

        With `match`, only the matched items come back, fused by the match's `fusion`: the
        match order is one input of the RRF, and each source re-scores the matched items instead
        of prefetching its own. `with_payload` as in `search`."""
        ...

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        """Several fused searches in one call to the store (one batch query): the answer of
        `fused_search` to each, in order."""
        ...

    def vectors(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> dict[str, np.ndarray]:
        """Stored vectors by item id; ids that are not stored, or lack that vector, are absent."""
        ...

    def points(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> list[Hit]:
        """Stored items in the order of `item_ids`, each with its payload and its `using`
        vector (score 0); ids that are not stored, or lack that vector, are left out."""
        ...

    def hits(self, item_ids: Sequence[str]) -> list[Hit]:
        """Stored items in the order of `item_ids`, each with its whole payload and every dense
        vector it holds (score 0); ids that are not stored are left out."""
        ...

    def count(self) -> int:
        """How many items are stored."""
        ...

    def close(self) -> None:
        """Releases the store; the index cannot be used afterwards."""
        ...


@functools.lru_cache(maxsize=1 << 16)
def point_id(item_id: str) -> uuid.UUID:
    """The stable point id of an item: the same item_id always maps to the same UUID.

    Remembered for the items asked most recently: a decision asks for those of the items it shows
    and of the person's recent ones, and a UUID5 (a SHA-1) costs more than the lookup."""
    return uuid.uuid5(ITEM_NAMESPACE, item_id)


def item_payload(item: Item) -> dict[str, Any]:
    """The payload stored with an item's point: what filters and callers need, no description."""
    return {
        "item_id": item.item_id,
        "title": item.title,
        "category": item.category,
        "price": float(item.price),
        "currency": item.currency,
        "margin": item.margin,
        "stock": item.stock,
        "in_stock": item.available,
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


def check_using(using: str) -> str:
    if using not in (VECTOR_NAME, COLLAB_VECTOR):
        raise ValueError(f"using must be {VECTOR_NAME!r} or {COLLAB_VECTOR!r}, got {using!r}")
    return using


def dims(index_dim: int, collab_dim: int) -> dict[str, int]:
    return {VECTOR_NAME: index_dim, COLLAB_VECTOR: collab_dim}


def check_vectors(vectors: Mapping[str, np.ndarray], dim: int) -> dict[str, list[float]]:
    """Validates vectors to set by item id, as lists of floats."""
    out = {}
    for item_id, vector in vectors.items():
        array = np.asarray(vector, dtype=np.float32)
        if array.shape != (dim,) or not np.isfinite(array).all():
            raise ValueError(
                f"vector of {item_id!r} must be {dim} finite numbers, got {array.shape}"
            )
        out[item_id] = array.tolist()
    return out


ID_ONLY = ["item_id"]
"""The payload selector of a search `with_payload=False`: only the item's id."""


def stored_hits(item_ids: Sequence[str], records: Sequence[Any]) -> list[Hit]:
    """`VectorIndex.hits` from the records either backend retrieved: in the order asked."""
    found = {}
    for record in records:
        if (payload := record.payload) is not None:  # built anew at each read: read it once
            found[payload["item_id"]] = Hit(
                payload["item_id"], 0.0, dict(payload), PointVectors(record)
            )
    return [found[item_id] for item_id in item_ids if item_id in found]


def point_vectors(vector: Any) -> dict[str, np.ndarray]:
    """A point's named vectors, as returned by either backend, as float32 arrays."""
    if not isinstance(vector, dict):
        return {}
    return {name: np.asarray(v, dtype=np.float32) for name, v in vector.items()}


def named_vector(vector: Any, using: str = VECTOR_NAME) -> np.ndarray:
    """One named vector out of a point's vectors, as returned by either backend."""
    if not isinstance(vector, dict) or using not in vector:
        raise RetrievalError(f"the vector store returned no {using!r} vector for a point")
    return np.asarray(vector[using], dtype=np.float32)


def stored_points(item_ids: Sequence[str], records: Sequence[Any], using: str) -> list[Hit]:
    """`VectorIndex.points` from the records either backend retrieved: in the order asked."""
    found = {}
    for record in records:
        # Qdrant Edge builds a record's vectors and payload anew at each read: read them once.
        payload, vector = record.payload, record.vector
        if payload is None or not isinstance(vector, dict) or using not in vector:
            continue
        found[payload["item_id"]] = Hit(
            item_id=payload["item_id"],
            score=0.0,
            payload=dict(payload),
            vectors={using: np.asarray(vector[using], dtype=np.float32)},
        )
    return [found[item_id] for item_id in item_ids if item_id in found]


class PointVectors(Mapping[str, np.ndarray]):
    """A returned point's named vectors, read from the point and made arrays the first time one
    is looked at. A search returns more candidates than a decision shows, and reading and
    converting every candidate's vectors costs more than the search itself."""

    __slots__ = ("_point", "_vectors")

    def __init__(self, point: Any) -> None:
        self._point: Any = point
        self._vectors: dict[str, np.ndarray] | None = None

    def _read(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = point_vectors(self._point.vector)
            self._point = None
        return self._vectors

    def __getitem__(self, name: str) -> np.ndarray:
        return self._read()[name]

    # Mapping's own `in` and `get` try a lookup and catch the KeyError.
    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def get(self, name: str, default: Any = None) -> Any:
        return self._read().get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def to_hit(point: Any, with_vectors: bool) -> Hit:
    """A Hit from a scored point of either backend (both expose id, score, payload, vector).
    Its vectors, when asked for, are read only when looked at (`PointVectors`)."""
    payload = point.payload  # Qdrant Edge builds the dict anew at each read: read it once
    if payload is None:
        raise RetrievalError(f"the vector store returned point {point.id} without its payload")
    return Hit(
        item_id=payload["item_id"],
        score=float(point.score),
        payload=dict(payload),
        vectors=PointVectors(point) if with_vectors else {},
    )
