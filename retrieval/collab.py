"""Collaborative vectors: implicit-feedback matrix factorization (ALS from `implicit`).

Interactions (views, clicks, carts, purchases; or ratings in an eval) become a users x items
confidence matrix; ALS learns a factor vector per user and per item whose dot product predicts
interest. Item factors go into the vector index as the `collab` named vector; user factors stay
in the model file and are looked up per request.

Training is incremental: a model remembers the newest event it has seen (by arrival time), and a
later `train` recomputes only the factors of users and items that have events since — with ALS's
own `partial_fit_users` / `partial_fit_items`, which solve those rows exactly against the other
side's factors — and adds the users and items that are new. `full=True` refits everything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from sqlalchemy import select
from threadpoolctl import threadpool_limits

from retrieval.index import COLLAB_VECTOR, VectorIndex
from store.db import Database
from store.models import EventRow, IdentityLink
from store.users import anonymous_owners, consenting_users

log = logging.getLogger("attune.collab")

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
"""Confidence an event adds to a (user, item) pair: a purchase says more than a view."""


@dataclass(frozen=True)
class ALSParams:
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 20
    alpha: float = 2.0  # confidence = 1 + alpha * weight
    seed: int = 0


@dataclass
class Interactions:
    """A users x items matrix of summed interaction weights, with the ids of its rows and columns."""

    users: list[str]
    items: list[str]
    matrix: csr_matrix

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, str, float]]) -> Interactions:
        user_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        rows, cols, values = [], [], []
        for user, item, weight in triples:
            rows.append(user_index.setdefault(user, len(user_index)))
            cols.append(item_index.setdefault(item, len(item_index)))
            values.append(weight)
        matrix = csr_matrix(
            (np.asarray(values, dtype=np.float32), (rows, cols)),
            shape=(len(user_index), len(item_index)),
        )
        matrix.sum_duplicates()
        return cls(list(user_index), list(item_index), matrix)


@dataclass
class CollabModel:
    user_ids: list[str]
    item_ids: list[str]
    user_factors: np.ndarray  # (users, factors), float32
    item_factors: np.ndarray  # (items, factors), float32
    params: ALSParams
    watermark: str | None = None  # arrival time of the newest event trained on (ISO 8601)
    trained_at: str = ""
    _user_row: dict[str, int] = field(default_factory=dict, repr=False)
    _item_row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._user_row = {user: row for row, user in enumerate(self.user_ids)}
        self._item_row = {item: row for row, item in enumerate(self.item_ids)}

    @property
    def dim(self) -> int:
        return self.params.factors

    @property
    def version(self) -> str:
        """Which training made this model: decisions record it (`versions.collab`)."""
        return f"als@{self.trained_at}" if self.trained_at else "als"

    def user_vector(self, user: str) -> np.ndarray | None:
        row = self._user_row.get(user)
        return None if row is None else self.user_factors[row]

    def item_vectors(self, item_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Item factors by id (all items, or those of `item_ids` the model knows)."""
        if item_ids is None:
            return dict(zip(self.item_ids, self.item_factors, strict=True))
        return {i: self.item_factors[self._item_row[i]] for i in item_ids if i in self._item_row}

    def without(self, users: Sequence[str]) -> tuple[CollabModel, int]:
        """This model with those users' factors removed, and how many were removed."""
        drop = {self._user_row[u] for u in users if u in self._user_row}
        keep = [row for row in range(len(self.user_ids)) if row not in drop]
        trimmed = CollabModel(
            user_ids=[self.user_ids[row] for row in keep],
            item_ids=self.item_ids,
            user_factors=self.user_factors[keep],
            item_factors=self.item_factors,
            params=self.params,
            watermark=self.watermark,
            trained_at=self.trained_at,
        )
        return trimmed, len(drop)

    def save(self, folder: Path) -> None:
        """Writes the model atomically: a reader sees the old model or the new one, never half."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "model.tmp.npz"
        np.savez(tmp, user_factors=self.user_factors, item_factors=self.item_factors)
        meta = {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "params": self.params.__dict__,
            "watermark": self.watermark,
            "trained_at": self.trained_at,
        }
        (folder / "model.tmp.json").write_text(json.dumps(meta))
        tmp.replace(folder / "model.npz")
        (folder / "model.tmp.json").replace(folder / "model.json")

    @classmethod
    def load(cls, folder: Path) -> CollabModel | None:
        if not (folder / "model.npz").is_file() or not (folder / "model.json").is_file():
            return None
        meta = json.loads((folder / "model.json").read_text())
        arrays = np.load(folder / "model.npz")
        return cls(
            user_ids=meta["user_ids"],
            item_ids=meta["item_ids"],
            user_factors=arrays["user_factors"],
            item_factors=arrays["item_factors"],
            params=ALSParams(**meta["params"]),
            watermark=meta["watermark"],
            trained_at=meta["trained_at"],
        )


def _als(params: ALSParams) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares  # imported late: it loads BLAS threads

    with threadpool_limits(1, "blas"):  # it checks the BLAS threads on construction
        return _construct(AlternatingLeastSquares, params)


def _construct(cls: Any, params: ALSParams) -> Any:
    return cls(
        factors=params.factors,
        regularization=params.regularization,
        iterations=params.iterations,
        alpha=params.alpha,
        random_state=params.seed,
        calculate_training_loss=False,
    )


def fit(interactions: Interactions, params: ALSParams | None = None) -> CollabModel:
    """Fits ALS from scratch on all interactions."""
    params = params or ALSParams()
    if interactions.matrix.nnz == 0:
        raise ValueError("no interactions to learn from")
    model = _als(params)
    with threadpool_limits(1, "blas"):  # ALS parallelizes itself; nested BLAS threads thrash
        model.fit(interactions.matrix, show_progress=False)
    return CollabModel(
        user_ids=list(interactions.users),
        item_ids=list(interactions.items),
        user_factors=np.asarray(model.user_factors, dtype=np.float32),
        item_factors=np.asarray(model.item_factors, dtype=np.float32),
        params=params,
    )


def update(
    previous: CollabModel, interactions: Interactions, users: set[str], items: set[str]
) -> CollabModel:
    """Recomputes the factors of `users` and `items` (and adds new ones) against the others'.

    `interactions` holds all interactions, so a touched user's row is solved on their whole
    history, not only on what is new.
    """
    model = _als(previous.params)
    model.user_factors = previous.user_factors.copy()
    model.item_factors = previous.item_factors.copy()
    user_ids, item_ids = list(previous.user_ids), list(previous.item_ids)
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_row = {t: i for i, t in enumerate(item_ids)}
    # Columns of `interactions` mapped onto the model's item rows, new items appended.
    for item in interactions.items:
        if item not in item_row:
            item_row[item] = len(item_ids)
            item_ids.append(item)
    for user in interactions.users:
        if user not in user_row:
            user_row[user] = len(user_ids)
            user_ids.append(user)
    remap = np.array([item_row[item] for item in interactions.items], dtype=np.int64)
    coo = interactions.matrix.tocoo()
    rows = np.array([user_row[interactions.users[r]] for r in coo.row], dtype=np.int64)
    full = csr_matrix(
        (coo.data, (rows, remap[coo.col])), shape=(len(user_ids), len(item_ids)), dtype=np.float32
    )
    by_item = full.T.tocsr()
    item_rows = np.array(sorted(item_row[i] for i in items if i in item_row), dtype=np.int64)
    user_rows = np.array(sorted(user_row[u] for u in users if u in user_row), dtype=np.int64)
    known_users = previous.user_factors.shape[0]
    # Items first, against the users that already have factors; then users, against all items;
    # then items once more, now that new users have factors too.
    with threadpool_limits(1, "blas"):
        if item_rows.size:
            model.partial_fit_items(item_rows, by_item[item_rows][:, :known_users])
        if user_rows.size:
            model.partial_fit_users(user_rows, full[user_rows])
        if item_rows.size:
            model.partial_fit_items(item_rows, by_item[item_rows])
    return CollabModel(
        user_ids=user_ids,
        item_ids=item_ids,
        user_factors=np.asarray(model.user_factors, dtype=np.float32),
        item_factors=np.asarray(model.item_factors, dtype=np.float32),
        params=previous.params,
        watermark=previous.watermark,
    )


# --- Training from the event store, for the service -------------------------------------------


@dataclass(frozen=True)
class TrainReport:
    mode: str  # "full", "incremental" or "unchanged"
    users: int
    items: int
    events: int
    users_updated: int
    items_updated: int
    vectors_indexed: int
    seconds: float
    watermark: str | None


def store_interactions(
    db: Database, *, consent: str | None = None
) -> tuple[Interactions, int, str | None]:
    """All events as (user key, item, weight), anonymous events counted for their linked user.

    With `consent` (a purpose, e.g. "profiling"), only the events of users who granted it are
    used; anonymous visitors, who cannot have granted anything, are left out too."""
    with db.session() as session:
        allowed = consenting_users(session, consent)
        links = anonymous_owners(session)
        rows = session.execute(
            select(EventRow.user_id, EventRow.anonymous_id, EventRow.item_id, EventRow.type)
        ).all()
        newest = session.scalar(select(EventRow.received_at).order_by(EventRow.received_at.desc()))

    def key(user_id: str | None, anonymous_id: str | None) -> str:
        user = user_id or links.get(anonymous_id or "")
        return f"user:{user}" if user else f"anon:{anonymous_id}"

    def allowed_key(user_id: str | None, anonymous_id: str | None) -> bool:
        if allowed is None:
            return True
        user = user_id or links.get(anonymous_id or "")
        return user is not None and user in allowed

    interactions = Interactions.from_triples(
        (key(user, anon), item, EVENT_WEIGHTS.get(kind, 1.0))
        for user, anon, item, kind in rows
        if allowed_key(user, anon)
    )
    return interactions, len(rows), newest.isoformat() if newest else None


def touched_since(db: Database, watermark: str) -> tuple[set[str], set[str]]:
    """User keys and items with events that arrived after `watermark`."""
    since = datetime.fromisoformat(watermark)
    with db.session() as session:
        links = dict(
            session.execute(
                select(IdentityLink.external_id, IdentityLink.user_id).where(
                    IdentityLink.kind == "anonymous"
                )
            ).all()
        )
        rows = session.execute(
            select(EventRow.user_id, EventRow.anonymous_id, EventRow.item_id).where(
                EventRow.received_at > since
            )
        ).all()
    users, items = set(), set()
    for user_id, anonymous_id, item in rows:
        user = user_id or links.get(anonymous_id or "")
        users.add(f"user:{user}" if user else f"anon:{anonymous_id}")
        items.add(item)
    return users, items


def train(
    db: Database,
    index: VectorIndex,
    folder: Path,
    *,
    full: bool = False,
    params: ALSParams | None = None,
    consent: str | None = None,
) -> TrainReport:
    """Trains (or updates) the collaborative model from the event store and indexes item vectors.

    `consent`: learn only from the users who granted this purpose (see `store_interactions`)."""
    started = time.perf_counter()
    previous = None if full else CollabModel.load(folder)
    params = params or (previous.params if previous else ALSParams(factors=index.collab_dim))
    if params.factors != index.collab_dim:
        raise ValueError(
            f"the index holds {index.collab_dim}-dimensional collab vectors; "
            f"train with factors={index.collab_dim}"
        )
    interactions, events, newest = store_interactions(db, consent=consent)
    if previous is None:
        model = fit(interactions, params)
        users, items, mode = set(model.user_ids), set(model.item_ids), "full"
    else:
        users, items = (
            touched_since(db, previous.watermark) if previous.watermark else (set(), set())
        )
        if not users and not items:
            return TrainReport(
                "unchanged", len(previous.user_ids), len(previous.item_ids), events, 0, 0, 0,
                time.perf_counter() - started, previous.watermark,
            )  # fmt: skip
        model = update(previous, interactions, users, items)
        mode = "incremental"
    model.watermark = newest
    model.trained_at = datetime.now().astimezone().isoformat()
    indexed = index.set_vectors(COLLAB_VECTOR, model.item_vectors(sorted(items)))
    model.save(folder)
    report = TrainReport(
        mode, len(model.user_ids), len(model.item_ids), events, len(users), len(items), indexed,
        round(time.perf_counter() - started, 3), newest,
    )  # fmt: skip
    log.info("collaborative model trained: %s", report)
    return report
