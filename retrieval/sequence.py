"""Item-item re-ranking of Qdrant's candidates: EASE^R weights and a next-item transition model.

Qdrant stays the candidate source: the fused query (taste, collab, recent, text) returns a pool of
candidates with every filter (stock, eligibility, exclusions) applied inside Qdrant. This module
then orders that pool with two in-memory item-item models fitted from the event store:

- EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): the closed
  form B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, zero diagonal; a candidate j scores
  Σ_i x_i B[i, j] over the person's history i (x_i the interaction's weight);
- transitions: how often item j came within `window` steps after item i in someone's
  time-ordered history (each step counted 1/distance), rows normalised to sum to 1; a candidate
  j scores Σ_i decay^age(i) T[i, j] over the person's `last` most recent items, newest first.

The two scores are each divided by their largest absolute value among the candidates and added
with `transition_weight`; Qdrant's own order adds `qdrant_weight` · k/(k + rank). Weights are
chosen on a validation split carved from training (`evals/suites/movielens.yaml`).

Serving: `fit_from_store` reads the events (consent-filtered like the collaborative model) in
time order per person; `ItemItemModel.save`/`load` keep the model in a folder beside the collab
model; a request reads the person's history (`person_history`: one maintained row,
`store.sequences`, whatever the number of their events), takes from it once what the scores read
(`inputs`) and re-scores the candidates (`rerank`, or `terms` for the parts of each score,
`sources` for the items an explanation names). EASE's
matrix is dense items x items (`max_items` caps it, most interacted items first, 10k items
= 400 MB float32); the transition matrix is sparse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import lapack
from scipy.sparse import csr_matrix, diags, load_npz, save_npz
from sqlalchemy import Connection, bindparam, select, union

from store.db import Database
from store.models import EventRow, IdentityLink, PersonSequence
from store.sequences import stored_history, subject_key
from store.users import anonymous_owners, consenting_users

History = Sequence[tuple[str, float]]
"""A person's interactions, oldest first: (item id, weight); a weight of 0 is no signal."""


@dataclass(frozen=True)
class Inputs:
    """What `ItemItemModel`'s scores read of one history (`ItemItemModel.inputs`), as the model's
    columns: EASE's row vector and the transitions' votes."""

    seen: np.ndarray  # int64: items with a non-zero latest weight, in first-seen order
    weights: np.ndarray  # float64: each one's latest weight
    voters: np.ndarray  # int64: the distinct items among the `last` latest, newest first
    votes: np.ndarray  # float64: each one's summed decay**age


_NO_INPUTS = Inputs(
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.float64),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.float64),
)


@dataclass(frozen=True)
class ItemItemParams:
    """How the model is fitted (λ, window, max_items) and how it re-ranks (the rest).

    The defaults are what the service runs (`agents.services.itemitem_params` reads them, or
    their `ATTUNE_ITEMITEM_*` settings) and what the MovieLens suite's hybrid is measured with:
    its validation split chose `transition_weight` and `qdrant_weight`, every other field is
    taken from here as it stands.
    """

    regularization: float = 100.0  # EASE's λ
    window: int = 30  # transitions: items up to this many steps later count
    last: int = 10  # scoring: the person's most recent items that vote for the next one
    decay: float = 0.8  # scoring: weight of the item `age` steps back is decay**age
    transition_weight: float = 0.8  # chosen on the MovieLens validation split (grid 0–2)
    qdrant_weight: float = 0.1  # chosen there too
    rrf_k: int = 60
    max_items: int = 10_000
    pool: int = 200  # Qdrant's candidates a request re-ranks


def ease_weights(x: csr_matrix, regularization: float) -> np.ndarray:
    """EASE^R's item-item weights B (items x items, float32, zero diagonal) in closed form."""
    if regularization <= 0:
        raise ValueError(f"EASE regularization must be positive, got {regularization}")
    gram = np.asarray((x.T @ x).todense(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += regularization
    # Cholesky (XᵀX + λI is symmetric positive definite): half the work of a general inverse.
    factor, info = lapack.spotrf(gram, lower=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info})")
    inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info={info})")
    inverse = np.tril(inverse) + np.tril(inverse, -1).T
    weights = inverse / -np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def transition_matrix(
    sequences: Iterable[History], column: dict[str, int], *, window: int
) -> csr_matrix:
    """T[i, j]: the share of item i's followers that were j, over every time-ordered history; a
    follower d steps later counts 1/d, one with weight 0 does not count."""
    if window < 1:
        raise ValueError(f"transition window must be at least 1, got {window}")
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for history in sequences:
        steps = [(column[item], weight) for item, weight in history if item in column]
        for position, (source, _) in enumerate(steps):
            for distance in range(1, window + 1):
                if position + distance >= len(steps):
                    break
                target, weight = steps[position + distance]
                if weight > 0 and target != source:
                    rows.append(source)
                    cols.append(target)
                    vals.append(1.0 / distance)
    n = len(column)
    counts = csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return csr_matrix(diags(1 / np.maximum(totals, 1e-12)) @ counts, dtype=np.float32)


def _unit_max(values: np.ndarray) -> np.ndarray:
    top = float(np.abs(values).max()) if values.size else 0.0
    return values / top if top > 0 else values


def fused_terms(
    ease_scores: np.ndarray,
    transition_scores: np.ndarray,
    *,
    transition_weight: float,
    qdrant_weight: float,
    rrf_k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three terms of each candidate's fused score, candidates in Qdrant's order: EASE and
    transition_weight · transitions (each model's scores scaled to at most 1), and
    qdrant_weight · rrf_k/(rrf_k + Qdrant rank)."""
    ranks = np.arange(len(ease_scores), dtype=np.float64)
    return (
        _unit_max(np.asarray(ease_scores, dtype=np.float64)),
        transition_weight * _unit_max(np.asarray(transition_scores, dtype=np.float64)),
        qdrant_weight * rrf_k / (rrf_k + ranks),
    )


def fuse(
    candidates: Sequence[str],
    ease_scores: np.ndarray,
    transition_scores: np.ndarray,
    *,
    transition_weight: float,
    qdrant_weight: float,
    rrf_k: int,
) -> list[str]:
    """Candidates (in Qdrant's order) re-ordered by the sum of their `fused_terms`."""
    terms = fused_terms(
        ease_scores,
        transition_scores,
        transition_weight=transition_weight,
        qdrant_weight=qdrant_weight,
        rrf_k=rrf_k,
    )
    order = np.argsort(-sum(terms), kind="stable")
    return [candidates[i] for i in order]


@dataclass
class ItemItemModel:
    """EASE^R weights and transitions over the same items, and how to fuse them."""

    item_ids: list[str]
    ease: np.ndarray  # items x items, float32
    transitions: csr_matrix  # items x items, rows sum to 1 (or 0)
    params: ItemItemParams
    trained_at: str | None = None  # set by `save`; decisions record it (`versions.itemitem`)

    @property
    def version(self) -> str:
        """Which training made this model: `itemitem@<saved at>`, or `itemitem@unsaved`."""
        return f"itemitem@{self.trained_at or 'unsaved'}"

    def __post_init__(self) -> None:
        self.column = {item: j for j, item in enumerate(self.item_ids)}
        # EASE's rows as a plain array: a saved model's matrix is a `np.memmap` (`load`), whose
        # indexing goes through Python (`memmap.__getitem__`, `__array_finalize__`) at each read.
        # The same mapped memory, read flat without it (C-ordered, as `np.save` wrote it: a
        # matrix fitted in memory in another order is copied once, so the view stays a view).
        self._ease_flat = np.ascontiguousarray(self.ease).reshape(-1)  # cells, row after row
        # `_dense_rows` reads the rows' stored entries as they are: one entry per cell.
        self.transitions.sum_duplicates()

    @classmethod
    def fit(cls, sequences: Mapping[str, History], params: ItemItemParams) -> ItemItemModel:
        """Both models from every person's time-ordered history (`sequences`, person -> history)."""
        counts: dict[str, int] = {}
        for history in sequences.values():
            for item in {item for item, weight in history if weight > 0}:
                counts[item] = counts.get(item, 0) + 1
        items = sorted(sorted(counts, key=lambda i: (-counts[i], i))[: params.max_items])
        column = {item: j for j, item in enumerate(items)}
        if not items:  # nothing to learn from yet: a model that leaves Qdrant's order alone
            empty = np.zeros((0, 0), dtype=np.float32)
            return cls([], empty, csr_matrix(empty), params)
        x = interaction_matrix(sequences.values(), column)
        return cls(
            items,
            ease_weights(x, params.regularization),
            transition_matrix(sequences.values(), column, window=params.window),
            params,
        )

    def inputs(self, history: History) -> Inputs:
        """What the scores read of a history (oldest first), computed once: the items the model
        knows with their latest non-zero weight, in the order each first appears (EASE's row
        vector), and the distinct items among the `last` latest known ones with their summed
        decay**age votes, newest first (the transitions' rows). A later interaction with an item
        replaces an earlier one's weight."""
        if not history:
            return _NO_INPUTS
        # One pass in C splits the pairs; `map` looks the items up without a generator's frames.
        items_seen, weights_seen = zip(*history, strict=True)
        cols = self._columns(items_seen)
        known = cols >= 0
        cols = cols[known]
        if not cols.size:
            return _NO_INPUTS
        weights = np.array(weights_seen, dtype=np.float64)[known]
        # Each item's first and last position: `unique` on the reversed columns finds the last.
        items, first = np.unique(cols, return_index=True)
        _, last_reversed = np.unique(cols[::-1], return_index=True)
        latest = weights[cols.size - 1 - last_reversed]
        order = np.argsort(first, kind="stable")
        seen, latest = items[order], latest[order]
        nonzero = latest != 0
        votes: dict[int, float] = {}
        for age, j in enumerate(cols[-self.params.last :][::-1].tolist()):
            votes[j] = votes.get(j, 0.0) + self.params.decay**age
        return Inputs(
            seen[nonzero],
            latest[nonzero],
            np.fromiter(votes, dtype=np.int64, count=len(votes)),
            np.fromiter(votes.values(), dtype=np.float64, count=len(votes)),
        )

    def candidate_scores(
        self, candidates: Sequence[str], history: History | Inputs
    ) -> tuple[np.ndarray, np.ndarray]:
        """EASE and transition scores of the candidates only (0 for items the model lacks): only
        the rows of the person's history and the candidates' columns are read. `history` may be
        its `inputs`, computed once for several calls."""
        given = history if isinstance(history, Inputs) else self.inputs(history)
        take = self._columns(candidates)
        known = take >= 0
        ease = np.zeros(len(candidates))
        transitions = np.zeros(len(candidates))
        if not known.any():
            return ease, transitions
        columns = take[known]
        if given.seen.size:
            weights = given.weights.astype(np.float32)
            ease[known] = weights @ self._ease_block(given.seen, columns)
        if given.voters.size:
            transitions[known] = (
                given.votes @ _dense_rows(self.transitions, given.voters)[:, columns]
            )
        return ease, transitions

    def rerank(self, candidates: Sequence[str], history: History | Inputs) -> list[str]:
        """Qdrant's candidates, in Qdrant's order, re-ordered by the fused item-item scores."""
        if not candidates:
            return []
        ease, transitions = self.candidate_scores(candidates, history)
        return fuse(
            candidates,
            ease,
            transitions,
            transition_weight=self.params.transition_weight,
            qdrant_weight=self.params.qdrant_weight,
            rrf_k=self.params.rrf_k,
        )

    def terms(
        self, candidates: Sequence[str], history: History | Inputs
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `fused_terms` `rerank` orders by (EASE, transitions, Qdrant's rank), per candidate
        in Qdrant's order: the service shows the first two as score parts."""
        ease, transitions = self.candidate_scores(candidates, history)
        return fused_terms(
            ease,
            transitions,
            transition_weight=self.params.transition_weight,
            qdrant_weight=self.params.qdrant_weight,
            rrf_k=self.params.rrf_k,
        )

    def sources(self, item: str, history: History | Inputs) -> tuple[str | None, str | None]:
        """The history items that gave `item` the most of its EASE score and of its transition
        score (None where none gave it a positive share): what an explanation may name."""
        return self.sources_of([item], history)[item]

    def sources_of(
        self, items: Sequence[str], history: History | Inputs
    ) -> dict[str, tuple[str | None, str | None]]:
        """`sources` of several items at once: the history is read once (or its `inputs` given)
        and each term's contributions are one block of the person's rows by the items' columns;
        on a tie, the row that came first (EASE: first seen; transitions: newest) is named."""
        found: dict[str, tuple[str | None, str | None]] = {item: (None, None) for item in items}
        known = [item for item in items if item in self.column]
        if not known:
            return found
        given = history if isinstance(history, Inputs) else self.inputs(history)
        columns = self._columns(known)
        ease_from = _strongest_rows(
            given.seen,
            given.weights,
            self._ease_block(given.seen, columns).astype(np.float64) if given.seen.size else None,
            len(known),
        )
        next_after = _strongest_rows(
            given.voters,
            given.votes,
            _dense_rows(self.transitions, given.voters)[:, columns].astype(np.float64)
            if given.voters.size
            else None,
            len(known),
        )
        names = self.item_ids
        for n, item in enumerate(known):
            ease_row, next_row = ease_from[n], next_after[n]
            found[item] = (
                None if ease_row < 0 else names[ease_row],
                None if next_row < 0 else names[next_row],
            )
        return found

    def _columns(self, items: Iterable[str]) -> np.ndarray:
        """The model's column of each item, -1 for an item it lacks (int64)."""
        return np.fromiter(map(self.column.get, items, repeat(-1)), dtype=np.int64)

    def _ease_block(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """EASE's cells of `rows` by `columns`: what `ease[np.ix_(rows, columns)]` reads (the same
        C-ordered float32 block), gathered in one `take` of exactly those cells from the flat
        matrix. Taking the rows whole first copied history x catalog cells to keep history x
        candidates of them: with 1,000 history items over 10k items' columns, 40 MB and 5.8 ms
        for a 200-candidate block, where the cells alone are 0.5 ms (0.2 ms either way at 1k)."""
        cells = rows[:, None] * self.ease.shape[1] + columns
        return self._ease_flat.take(cells).reshape(cells.shape)

    def save(self, folder: Path) -> None:
        """Writes the model atomically, like the collaborative model."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "ease.tmp.npy", self.ease)
        save_npz(folder / "transitions.tmp.npz", self.transitions)
        self.trained_at = datetime.now(UTC).isoformat(timespec="seconds")
        meta = {
            "item_ids": self.item_ids,
            "params": asdict(self.params),
            "trained_at": self.trained_at,
        }
        (folder / "itemitem.tmp.json").write_text(json.dumps(meta))
        (folder / "ease.tmp.npy").replace(folder / "ease.npy")
        (folder / "transitions.tmp.npz").replace(folder / "transitions.npz")
        (folder / "itemitem.tmp.json").replace(folder / "itemitem.json")

    @classmethod
    def load(cls, folder: Path, serving: ItemItemParams | None = None) -> ItemItemModel | None:
        """The saved model (None if there is none). With `serving`, it re-ranks with those
        parameters' scoring fields (weights, pool, last, decay, rrf_k); the fitted fields
        (regularization, window, max_items) stay the ones it was fitted with."""
        if not (folder / "itemitem.json").is_file():
            return None
        meta = json.loads((folder / "itemitem.json").read_text())
        params = ItemItemParams(**meta["params"])
        if serving is not None:
            params = replace(serving, **{name: getattr(params, name) for name in _FITTED})
        return cls(
            meta["item_ids"],
            np.load(folder / "ease.npy", mmap_mode="r"),
            load_npz(folder / "transitions.npz").tocsr(),
            params,
            meta.get("trained_at"),
        )


_FITTED = ("regularization", "window", "max_items")  # what the saved matrices were fitted with


def _strongest_rows(
    rows: np.ndarray, weights: np.ndarray, block: np.ndarray | None, n: int
) -> list[int]:
    """Per column of `block` (the `rows`' rows by `n` items' columns), the row whose weight x cell
    is largest, the first one on a tie; -1 where the largest is not positive."""
    if block is None or not rows.size:
        return [-1] * n
    contributions = weights[:, None] * block
    best = np.argmax(contributions, axis=0)
    top = contributions[best, np.arange(n)]
    return np.where(top > 0, rows[best], -1).tolist()


def _dense_rows(matrix: csr_matrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Some rows of a CSR matrix (one stored entry per cell) as a dense array, read from its
    arrays directly: scipy's row and column indexing costs ten times more for the few rows of a
    person's history, and was most of a request's re-ranking."""
    dense = np.zeros((len(rows), matrix.shape[1]), dtype=matrix.dtype)
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for n, row in enumerate(rows):
        start, end = indptr[row], indptr[row + 1]
        dense[n, indices[start:end]] = data[start:end]
    return dense


def interaction_matrix(sequences: Iterable[History], column: dict[str, int]) -> csr_matrix:
    """People x items, each cell the person's latest weight for the item (0 drops it)."""
    histories = list(sequences)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for row, history in enumerate(histories):
        latest = {item: weight for item, weight in history if item in column}
        for item, weight in latest.items():
            if weight > 0:
                rows.append(row)
                cols.append(column[item])
                vals.append(weight)
    return csr_matrix((vals, (rows, cols)), shape=(len(histories), len(column)), dtype=np.float32)


def store_sequences(
    db: Database, *, consent: str | None = None
) -> dict[str, list[tuple[str, float]]]:
    """Every person's events in time order as (item, event weight), anonymous events under their
    linked user; with `consent`, only people who granted that purpose (as `collab.store_interactions`)."""
    from retrieval.collab import EVENT_WEIGHTS

    with db.session() as session:
        allowed = consenting_users(session, consent)
        links = anonymous_owners(session)
        rows = session.execute(
            select(
                EventRow.user_id, EventRow.anonymous_id, EventRow.item_id, EventRow.type
            ).order_by(EventRow.ts, EventRow.event_id)
        ).all()
    sequences: dict[str, list[tuple[str, float]]] = {}
    for user_id, anonymous_id, item, kind in rows:
        user = user_id or links.get(anonymous_id or "")
        if allowed is not None and (user is None or user not in allowed):
            continue
        key = f"user:{user}" if user else f"anon:{anonymous_id}"
        sequences.setdefault(key, []).append((item, EVENT_WEIGHTS.get(kind, 1.0)))
    return sequences


def _history_statements() -> dict[tuple[bool, bool], Any]:
    """`person_history`'s SELECTs, built once, by which ids are sent: (user id, anonymous id).

    One branch per kind of id — the user's own events, those of the anonymous ids linked to them,
    those of the anonymous id sent — each the newest `limit` by an index range (`ix_events_*_recent`,
    migration 0005), merged by UNION (an event stamped with both ids is one event) and cut to the
    newest `limit` again. A single `OR` of the three read and sorted the person's whole history.
    """
    events = EventRow.__table__
    links = IdentityLink.__table__
    newest = (events.c.ts.desc(), events.c.event_id.desc())

    def branch(condition: Any) -> Any:
        columns = (events.c.event_id, events.c.ts, events.c.item_id, events.c.type)
        return (
            select(*columns).where(condition).order_by(*newest).limit(bindparam("limit")).subquery()
        )

    anonymous = branch(events.c.anonymous_id == bindparam("anonymous_id"))
    user = branch(events.c.user_id == bindparam("user_id"))
    # The anonymous ids linked to the user, in the same statement.
    linked = branch(
        events.c.anonymous_id.in_(
            select(links.c.external_id).where(
                links.c.kind == "anonymous", links.c.user_id == bindparam("user_id")
            )
        )
    )
    statements = {}
    for by_user, by_anonymous in ((True, False), (False, True), (True, True)):
        mine = ([anonymous] if by_anonymous else []) + ([user, linked] if by_user else [])
        merged = union(*(select(*part.c) for part in mine)).subquery()
        statements[by_user, by_anonymous] = (
            select(merged.c.item_id, merged.c.type)
            .order_by(merged.c.ts.desc(), merged.c.event_id.desc())
            .limit(bindparam("limit"))
        )
    return statements


_HISTORY = _history_statements()


_SEQUENCE = select(PersonSequence.state).where(PersonSequence.subject_key == bindparam("key"))


def person_history(
    db: Database, user_id: str | None, anonymous_id: str | None, *, limit: int = 1000
) -> list[tuple[str, float]]:
    """What the re-ranking reads of one person's history, oldest first, as (item, event weight):
    the events of their user id and of every anonymous id linked to it, as `store_sequences`
    groups them.

    From their maintained row (`store.sequences`: each distinct item with its latest event, in
    first-touched order, then the latest events), one primary-key read whatever the history's
    length: `ItemItemModel.inputs` reads from it what it reads from the whole history. Without
    a row (none built yet, or a user id sent with an anonymous id): their latest `limit` events,
    one statement (built once). A decision reads the row with the person instead
    (`tools.reads.decision_history`)."""
    if not user_id and not anonymous_id:
        return []
    key = subject_key(user_id, anonymous_id)
    with db.connect() as connection:
        if key is not None:
            state = connection.execute(_SEQUENCE, {"key": key}).scalar()
            history = stored_person_history(state)
            if history is not None:
                return history
        return recent_history(connection, user_id, anonymous_id, limit=limit)


def stored_person_history(state: dict[str, Any] | None) -> list[tuple[str, float]] | None:
    """`person_history` from the state of their row, read already; None when there is no row
    (None) or it is of another version: then their events answer (`recent_history`)."""
    from retrieval.collab import EVENT_WEIGHTS

    pairs = stored_history(state) if state is not None else None
    if pairs is None:
        return None
    return [(item, EVENT_WEIGHTS.get(kind, 1.0)) for item, kind in pairs]


def recent_history(
    connection: Connection, user_id: str | None, anonymous_id: str | None, *, limit: int = 1000
) -> list[tuple[str, float]]:
    """`person_history` without their row: their latest `limit` events, oldest first."""
    from retrieval.collab import EVENT_WEIGHTS

    statement = _HISTORY[bool(user_id), bool(anonymous_id)]
    rows = connection.execute(
        statement, {"user_id": user_id, "anonymous_id": anonymous_id, "limit": limit}
    ).all()
    return [(item, EVENT_WEIGHTS.get(kind, 1.0)) for item, kind in reversed(rows)]


def fit_from_store(
    db: Database, folder: Path, params: ItemItemParams, *, consent: str | None = None
) -> ItemItemModel:
    """Fits both models from the event store and saves them to `folder`."""
    model = ItemItemModel.fit(store_sequences(db, consent=consent), params)
    model.save(folder)
    return model
