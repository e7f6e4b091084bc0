"""Vector index on a Qdrant server through qdrant-client, or on qdrant-client's local mode.

Local mode (`path=` a folder, or ":memory:") is pure Python and brute force: it speaks the
server's API, which makes it the test double for this backend, but it is meant for development
only and slows down sharply past some tens of thousands of points.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from retrieval.index import (
    COLLAB_VECTOR,
    DEFAULT_COLLAB_DIM,
    ID_ONLY,
    LEXICAL_VECTOR,
    RRF_K,
    UPSERT_BATCH_SIZE,
    VECTOR_NAME,
    FusedSearch,
    Hit,
    IndexConfigError,
    IndexUnavailable,
    ItemFilter,
    Lexical,
    Match,
    Source,
    check_batch,
    check_query,
    check_using,
    check_vectors,
    dims,
    item_payload,
    named_vector,
    point_id,
    stored_hits,
    stored_points,
    to_hit,
)
from store.schemas import Item

PAYLOAD_INDEXES: dict[str, qm.PayloadSchemaType] = {
    "category": qm.PayloadSchemaType.KEYWORD,
    "item_id": qm.PayloadSchemaType.KEYWORD,
    "in_stock": qm.PayloadSchemaType.BOOL,
    "min_age": qm.PayloadSchemaType.INTEGER,
    "price": qm.PayloadSchemaType.FLOAT,
}


@contextmanager
def _server_call(action: str) -> Iterator[None]:
    """Turns transport failures and server-side errors into IndexUnavailable; 4xx propagate."""
    try:
        yield
    except (ResponseHandlingException, ResourceExhaustedResponse) as err:
        raise IndexUnavailable(f"Qdrant could not {action}: {err}") from err
    except UnexpectedResponse as err:
        if err.status_code is not None and 400 <= err.status_code < 500 and err.status_code != 429:
            raise
        raise IndexUnavailable(f"Qdrant could not {action}: HTTP {err.status_code}") from err


def server_filter(flt: ItemFilter | None) -> qm.Filter | None:
    """Translates an ItemFilter into a qdrant-client filter, or None when it constrains nothing."""
    if flt is None:
        return None
    must: list[qm.Condition] = []
    must_not: list[qm.Condition] = []
    if flt.categories:
        must.append(qm.FieldCondition(key="category", match=qm.MatchAny(any=list(flt.categories))))
    if flt.exclude_ids:
        must_not.append(
            qm.FieldCondition(key="item_id", match=qm.MatchAny(any=list(flt.exclude_ids)))
        )
    if flt.max_min_age is not None:
        must.append(qm.FieldCondition(key="min_age", range=qm.Range(lte=flt.max_min_age)))
    if flt.in_stock_only:
        must.append(qm.FieldCondition(key="in_stock", match=qm.MatchValue(value=True)))
    if flt.max_price is not None:
        must.append(qm.FieldCondition(key="price", range=qm.Range(lte=flt.max_price)))
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def _rrf(weights: list[float]) -> qm.RrfQuery:
    return qm.RrfQuery(rrf=qm.Rrf(k=RRF_K, weights=weights))


def _match_fusion(match: Match, weights: list[float]) -> qm.RrfQuery | qm.FusionQuery:
    """The query fusing a match's sources (weights are those of its present sources)."""
    if match.fusion == "dbsf":
        return qm.FusionQuery(fusion=qm.Fusion.DBSF)
    return _rrf(weights)


class QdrantServerIndex:
    """A VectorIndex on one collection of a Qdrant server (`url`) or of local mode (`path`)."""

    backend = "qdrant-server"

    def __init__(
        self,
        *,
        url: str | None = None,
        path: str | None = None,
        collection: str = "items",
        dim: int,
        collab_dim: int = DEFAULT_COLLAB_DIM,
        shards: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        """`shards` and `replication_factor` shape a new collection on a Qdrant cluster (the
        server's defaults when None); an existing collection keeps its own."""
        if (url is None) == (path is None):
            raise ValueError(
                "give exactly one of url (a Qdrant server, e.g. http://localhost:6333) "
                "or path (a folder, or ':memory:', for qdrant-client's local mode)"
            )
        self.dim = dim
        self.collab_dim = collab_dim
        self.collection = collection
        self.shards = shards
        self.replication_factor = replication_factor
        self.url = url
        self._lexical = Lexical()
        if url is not None:
            self._client = QdrantClient(url=url)
        elif path == ":memory:":
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(path=path)
        try:
            where = f" at {url}" if url is not None else ""
            with _server_call(f"open collection {collection!r}{where}"):
                self._ensure_collection()
        except BaseException:
            # Release the client, and in local mode the folder's lock, before giving up.
            self._client.close()
            raise

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self.collection):
            self._client.create_collection(
                self.collection,
                vectors_config={
                    VECTOR_NAME: qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
                    COLLAB_VECTOR: qm.VectorParams(size=self.collab_dim, distance=qm.Distance.DOT),
                },
                # The BM25 term weights come from the client (see `Lexical`); Qdrant applies
                # the IDF at query time over the collection.
                sparse_vectors_config={
                    LEXICAL_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)
                },
                shard_number=self.shards,
                replication_factor=self.replication_factor,
            )
        info = self._client.get_collection(self.collection)
        stored = info.config.params.vectors
        expected = {
            VECTOR_NAME: (self.dim, qm.Distance.COSINE),
            COLLAB_VECTOR: (self.collab_dim, qm.Distance.DOT),
        }
        found = {
            name: (params.size, params.distance)
            for name, params in (stored.items() if isinstance(stored, dict) else [])
        }
        sparse = info.config.params.sparse_vectors or {}
        lexical = sparse.get(LEXICAL_VECTOR)
        if lexical is None or lexical.modifier != qm.Modifier.IDF:
            raise IndexConfigError(
                f"collection {self.collection!r} has no {LEXICAL_VECTOR!r} sparse vector with "
                "the IDF modifier, which keyword search needs: it was created by an older "
                "Attune. Use another collection name, or drop it and re-ingest."
            )
        if any(found.get(name) != want for name, want in expected.items()):
            raise IndexConfigError(
                f"collection {self.collection!r} does not hold {self.dim}-dimensional cosine "
                f"{VECTOR_NAME!r} and {self.collab_dim}-dimensional dot {COLLAB_VECTOR!r} "
                f"vectors (it has {stored}). A collection keeps the vectors it "
                "was created with: use another collection name, or drop it and re-ingest, "
                "after changing the embedder."
            )
        with warnings.catch_warnings():
            # Local mode ignores payload indexes and says so once; a server uses them.
            warnings.filterwarnings(
                "ignore", message="Payload indexes have no effect", category=UserWarning
            )
            for field_name, schema in PAYLOAD_INDEXES.items():
                if field_name not in info.payload_schema:
                    self._client.create_payload_index(
                        self.collection, field_name, field_schema=schema, wait=True
                    )

    def upsert(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        array = check_batch(items, vectors, self.dim)
        for start in range(0, len(items), UPSERT_BATCH_SIZE):
            batch = items[start : start + UPSERT_BATCH_SIZE]
            # An upsert replaces the whole point: carry over the collab vectors already stored.
            collab = self.vectors([item.item_id for item in batch], using=COLLAB_VECTOR)
            points = []
            for item, row in zip(batch, array[start : start + UPSERT_BATCH_SIZE], strict=True):
                indices, values = self._lexical.document(item)
                named: dict[str, Any] = {
                    VECTOR_NAME: row.tolist(),
                    LEXICAL_VECTOR: qm.SparseVector(indices=indices, values=values),
                }
                if item.item_id in collab:
                    named[COLLAB_VECTOR] = collab[item.item_id].tolist()
                points.append(
                    qm.PointStruct(
                        id=str(point_id(item.item_id)), vector=named, payload=item_payload(item)
                    )
                )
            with _server_call("store items"):
                self._client.upsert(self.collection, points=points, wait=True)

    def set_vectors(self, using: str, vectors: Mapping[str, np.ndarray]) -> int:
        dim = dims(self.dim, self.collab_dim)[check_using(using)]
        rows = check_vectors(vectors, dim)
        by_point = {str(point_id(item_id)): item_id for item_id in rows}
        with _server_call("fetch items"):
            records = self._client.retrieve(
                self.collection, ids=list(by_point), with_payload=False, with_vectors=False
            )
        ids = [by_point[str(record.id)] for record in records]
        for start in range(0, len(ids), UPSERT_BATCH_SIZE):
            update = [
                qm.PointVectors(id=str(point_id(item_id)), vector={using: rows[item_id]})
                for item_id in ids[start : start + UPSERT_BATCH_SIZE]
            ]
            with _server_call("store vectors"):
                self._client.update_vectors(self.collection, points=update, wait=True)
        return len(ids)

    def delete(self, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        ids: list[qm.ExtendedPointId] = [str(point_id(item_id)) for item_id in item_ids]
        with _server_call("delete items"):
            self._client.delete(
                self.collection, points_selector=qm.PointIdsList(points=ids), wait=True
            )

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
        query = check_query(vector, dims(self.dim, self.collab_dim)[check_using(using)], k)
        with _server_call("search"):
            response = self._client.query_points(
                self.collection,
                query=query,
                using=using,
                query_filter=server_filter(flt),
                limit=k,
                with_payload=True if with_payload else ID_ONLY,
                with_vectors=[VECTOR_NAME, COLLAB_VECTOR] if with_vectors else False,
            )
        return [to_hit(point, with_vectors) for point in response.points]

    def _prefetch(self, source: Source, limit: int, where: qm.Filter | None) -> qm.Prefetch | None:
        """One source as a prefetch, or None for a text with no searchable word."""
        query: Any
        if source.using == LEXICAL_VECTOR:
            assert source.text is not None  # checked by Source
            indices, values = self._lexical.query(source.text)
            if not indices:
                return None
            query = qm.SparseVector(indices=indices, values=values)
        else:
            size = dims(self.dim, self.collab_dim)[source.using]
            query = check_query(source.dense, size, limit)
        return qm.Prefetch(
            query=query,
            using=source.using,
            filter=where,
            limit=limit,
            score_threshold=source.threshold,
        )

    def _rescore(self, source: Source, inner: qm.Prefetch, limit: int) -> qm.Prefetch:
        """The items of `inner`, scored by a dense source instead."""
        size = dims(self.dim, self.collab_dim)[source.using]
        return qm.Prefetch(
            prefetch=[inner],
            query=check_query(source.dense, size, limit),
            using=source.using,
            limit=limit,
        )

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
        return self.fused_searches(
            [FusedSearch(tuple(sources), k, flt, prefetch, with_vectors, match, with_payload)]
        )[0]

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        requests = [self._fused_request(search) for search in searches]
        asked = [request for request in requests if request is not None]
        responses: list[qm.QueryResponse] = []
        if asked:
            with _server_call("search"):
                responses = self._client.query_batch_points(self.collection, requests=asked)
        answers = iter(responses)
        return [
            []
            if request is None
            else [to_hit(point, search.with_vectors) for point in next(answers).points]
            for search, request in zip(searches, requests, strict=True)
        ]

    def _fused_request(self, search: FusedSearch) -> qm.QueryRequest | None:
        """The query of one fused search, or None when it can match nothing (a text without a
        searchable word)."""
        sources, k, prefetch, match = search.sources, search.k, search.prefetch, search.match
        where = server_filter(search.flt)
        inputs: list[tuple[float, qm.Prefetch | None]]
        if match is None:
            limit = k
            inputs = [(s.weight, self._prefetch(s, max(prefetch, k), where)) for s in sources]
        else:
            matched = [
                (s.weight, stage)
                for s in match.sources
                if (stage := self._prefetch(s, max(prefetch, k), where)) is not None
            ]
            if not matched:
                return None
            limit = min(k, match.limit)
            fusion = _match_fusion(match, [w for w, _ in matched])
            if not sources:
                inputs = list(matched)
            else:
                inner = qm.Prefetch(
                    prefetch=[p for _, p in matched],
                    query=fusion,
                    filter=where,
                    limit=match.limit,
                )
                inputs = [(match.weight, inner)]
                inputs += [(s.weight, self._rescore(s, inner, match.limit)) for s in sources]
        present = [(weight, stage) for weight, stage in inputs if stage is not None]
        if not present:
            return None
        return qm.QueryRequest(
            prefetch=[stage for _, stage in present],
            query=fusion if match is not None and not sources else _rrf([w for w, _ in present]),
            filter=where,
            limit=limit,
            with_payload=True if search.with_payload else ID_ONLY,
            with_vector=[VECTOR_NAME, COLLAB_VECTOR] if search.with_vectors else False,
        )

    def vectors(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> dict[str, np.ndarray]:
        if not item_ids:
            return {}
        by_point = {str(point_id(item_id)): item_id for item_id in item_ids}
        with _server_call("fetch vectors"):
            records = self._client.retrieve(
                self.collection,
                ids=list(by_point),
                with_payload=False,
                with_vectors=[check_using(using)],
            )
        return {
            by_point[str(record.id)]: named_vector(record.vector, using)
            for record in records
            if isinstance(record.vector, dict) and using in record.vector
        }

    def points(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> list[Hit]:
        records = self._retrieve(item_ids, [check_using(using)])
        return stored_points(item_ids, records, using)

    def hits(self, item_ids: Sequence[str]) -> list[Hit]:
        records = self._retrieve(item_ids, [VECTOR_NAME, COLLAB_VECTOR])
        return stored_hits(item_ids, records)

    def _retrieve(self, item_ids: Sequence[str], vectors: list[str]) -> list[Any]:
        """The stored points of `item_ids` (each once), with their payloads and `vectors`."""
        if not item_ids:
            return []
        with _server_call("fetch points"):
            return self._client.retrieve(
                self.collection,
                ids=[str(point_id(item_id)) for item_id in dict.fromkeys(item_ids)],
                with_payload=True,
                with_vectors=vectors,
            )

    def count(self) -> int:
        with _server_call("count items"):
            return self._client.count(self.collection, exact=True).count

    def close(self) -> None:
        """Closes the client; in local mode this releases the folder's lock."""
        self._client.close()

    def __enter__(self) -> QdrantServerIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
