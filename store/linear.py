"""Linear bandit state: append-only observations, and the ridge posterior every worker derives.

Each rewarded decision is one inserted row (`LinearObservation`: feature vector x, reward r).
The posterior of a (policy, segment) is a sum over its rows,

    A = A0 + Σ x xᵀ,    b = b0 + Σ r x,    θ̂ = A⁻¹ b,

where A0 = ridge·I, except on the coordinates a `LinearPrior` sets (pseudo-observations). Since
rows are only inserted, concurrent feedback from several workers can never lose an update,
whatever the database; reading the state is a sum, so every worker computes the same one.

`ObservationCache` keeps the sums in memory and, on each `load_state`, reads only the rows it has
not folded in yet. Ids are allocated when a row is inserted, not when it is committed, so on
PostgreSQL a row can become visible after a row with a larger id. The cache therefore re-checks
the ids of the last `settle_seconds` on every refresh and only stops looking below an id once
that row is older than the settle window: a write transaction that stays open longer than
`settle_seconds` (default 60 s) could still be missed by a cache, never by an uncached load.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import numpy as np
from scipy.linalg import lapack
from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.errors import Conflict
from store.models import LinearObservation, utcnow
from store.prepared import Prepared

# Sherman–Morrison updates accumulate rounding error; recompute the inverse exactly this often.
_RESYNC_EVERY = 1000


@dataclass(frozen=True)
class LinearPrior:
    """Pseudo-observations on single coordinates (typically the per-offer intercepts).

    `coordinates` maps a coordinate index to (count, successes): that coordinate's diagonal of A0
    is `count` instead of the ridge, and its entry of b0 is `successes`. A Beta(α, β) prior on an
    offer is (α + β, α) on that offer's one-hot coordinate: its intercept then starts at
    α / (α + β), as sure as α + β observations would make it.
    """

    coordinates: Mapping[int, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, (count, successes) in self.coordinates.items():
            if index < 0:
                raise ValueError(f"prior coordinate {index} is negative")
            if not (count > 0 and 0 <= successes <= count):
                raise ValueError(
                    f"prior on coordinate {index}: need count > 0 and 0 <= successes <= count, "
                    f"got ({count}, {successes})"
                )

    def initial(self, dim: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
        """A0 and b0 for a `dim`-dimensional model with this ridge elsewhere."""
        if not ridge > 0:
            raise ValueError(f"ridge must be positive, got {ridge}")
        a0 = np.eye(dim) * ridge
        b0 = np.zeros(dim)
        for index, (count, successes) in self.coordinates.items():
            if index >= dim:
                raise ValueError(f"prior coordinate {index} is outside a {dim}-dimensional model")
            a0[index, index] = count
            b0[index] = successes
        return a0, b0


@dataclass(frozen=True, eq=False)
class LinearState:
    """The ridge posterior: precision `A`, `b`, and what follows from them (A⁻¹, θ̂ = A⁻¹ b).

    Immutable: `updated` returns a new state. `last_id` is the largest observation id folded in
    (0 for in-memory states), `observations` how many rows were.
    """

    A: np.ndarray
    b: np.ndarray
    covariance: np.ndarray  # A⁻¹; the bandit scales it by its noise level
    theta: np.ndarray
    observations: int = 0
    last_id: int = 0

    @classmethod
    def from_sums(
        cls, A: np.ndarray, b: np.ndarray, observations: int = 0, last_id: int = 0
    ) -> LinearState:
        """The state for precision `A` and vector `b`; A must be symmetric positive definite."""
        A = np.array(A, dtype=np.float64)
        b = np.array(b, dtype=np.float64)
        if A.ndim != 2 or A.shape != (b.size, b.size) or b.ndim != 1:
            raise ValueError(f"A must be d×d and b of length d, got {A.shape} and {b.shape}")
        # The inverse from the Cholesky factor A = L Lᵀ as A⁻¹ = L⁻ᵀ L⁻¹ (LAPACK potrf, trtri and
        # one matrix product). Not potri: OpenBLAS runs potri on every core even for the 63×63
        # matrix of the demo offers, and on a busy machine waiting for the other threads cost
        # ~20× the arithmetic (5.7 ms instead of 0.26 ms); potrf, trtri and a product this
        # small stay on the calling thread.
        factor, info = lapack.dpotrf(A, lower=1, clean=1)
        if info != 0:
            raise ValueError("A is not positive definite: is the ridge positive?")
        root_inverse, info = lapack.dtrtri(factor, lower=1)
        if info != 0:
            raise ValueError("A is singular: is the ridge positive?")
        covariance = root_inverse.T @ root_inverse
        return cls._frozen(A, b, covariance, covariance @ b, observations, last_id)

    @classmethod
    def empty(cls, dim: int, ridge: float, prior: LinearPrior | None = None) -> LinearState:
        """The state before any observation: the prior alone."""
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        a0, b0 = (prior or LinearPrior()).initial(dim, ridge)
        return cls.from_sums(a0, b0)

    @property
    def dim(self) -> int:
        return self.b.size

    def updated(self, x: Sequence[float] | np.ndarray, reward: float) -> LinearState:
        """The state after one more observation, by a Sherman–Morrison rank-one update.

        Cheap (O(d²)), for in-memory learners such as the simulator; every 1,000 observations the
        inverse is recomputed exactly so rounding errors do not build up.
        """
        vector = check_vector(x, self.dim)
        reward = check_reward(reward)
        A = self.A + np.outer(vector, vector)
        b = self.b + reward * vector
        observations = self.observations + 1
        if observations % _RESYNC_EVERY == 0:
            return LinearState.from_sums(A, b, observations, self.last_id)
        cx = self.covariance @ vector
        covariance = self.covariance - np.outer(cx, cx) / (1.0 + vector @ cx)
        return self._frozen(A, b, covariance, covariance @ b, observations, self.last_id)

    @classmethod
    def _frozen(
        cls,
        A: np.ndarray,
        b: np.ndarray,
        covariance: np.ndarray,
        theta: np.ndarray,
        observations: int,
        last_id: int,
    ) -> LinearState:
        # A state may be shared between threads and cached: nobody may change it in place.
        for array in (A, b, covariance, theta):
            array.flags.writeable = False
        return cls(A, b, covariance, theta, observations, last_id)


def check_vector(x: Sequence[float] | np.ndarray, dim: int | None = None) -> np.ndarray:
    """`x` as a 1-D float array, with a clear error when it is not a finite vector of `dim`."""
    vector = np.asarray(x, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(
            f"a feature vector must be a non-empty 1-D sequence, got shape {vector.shape}"
        )
    if dim is not None and vector.size != dim:
        raise ValueError(
            f"the feature vector has {vector.size} values but the model has {dim}; "
            "build features with the same OfferFeatures as the state"
        )
    if not np.isfinite(vector).all():
        raise ValueError("the feature vector holds NaN or infinite values")
    return vector


def check_reward(reward: float) -> float:
    """A reward in [0, 1]; anything else (including NaN) is refused with the reason."""
    value = float(reward)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"a reward must be in [0, 1], got {reward!r}; scale valued rewards first "
            "(see tools.bandit_priors.margin_reward)"
        )
    return value


def add_observation(
    session: Session,
    policy: str,
    segment: str,
    x: Sequence[float] | np.ndarray,
    reward: float,
    *,
    offer_id: str | None = None,
    decision_id: str | None = None,
    created_at: datetime | None = None,
) -> int:
    """Append one rewarded observation and return its id.

    Raises:
        ValueError: x is not a finite non-empty vector, or the reward is outside [0, 1].
        Conflict: this policy already has an observation for `decision_id`.
    """
    row = LinearObservation(
        policy=policy,
        segment=segment,
        offer_id=offer_id,
        decision_id=decision_id,
        x=check_vector(x).tolist(),
        reward=check_reward(reward),
        created_at=created_at or utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as error:
        raise Conflict(
            f"policy {policy!r} already has an observation for decision {decision_id!r}"
        ) from error
    return row.id


@dataclass
class _Sums:
    """Σ x xᵀ, Σ r x and the ids behind them, for one (policy, segment, dim)."""

    xx: np.ndarray
    xr: np.ndarray
    observations: int = 0
    last_id: int = 0
    settled_id: int = 0  # every row with an id at or below this one is folded in
    recent: dict[int, datetime] = field(default_factory=dict)  # folded rows above settled_id

    @classmethod
    def zero(cls, dim: int) -> _Sums:
        return cls(np.zeros((dim, dim)), np.zeros(dim))

    def fold(self, rows: Sequence[tuple[int, list[float], float]], dim: int) -> None:
        if not rows:
            return
        for row_id, x, _ in rows:
            if len(x) != dim:
                raise ValueError(
                    f"observation {row_id} has {len(x)} features but the state has {dim}: the "
                    "feature layout changed; give the new layout a new policy name"
                )
        X = np.array([x for _, x, _ in rows], dtype=np.float64)
        r = np.array([reward for _, _, reward in rows], dtype=np.float64)
        self.xx += X.T @ X
        self.xr += X.T @ r
        self.observations += len(rows)
        self.last_id = max(self.last_id, max(row_id for row_id, _, _ in rows))


class ObservationCache:
    """Running sums per (policy, segment, dim), so that a refresh reads only the new rows.

    One per worker process, shared by its threads. Use it with sessions that have not written
    observations themselves: a row folded in from a transaction that then rolls back stays in
    the sums.

    A refresh is one statement when no row was added (between two rewards, every decision):
    the ids above the settled one (or the rows above it, when none is recent), compiled once
    and run on the DBAPI cursor (`store.prepared`), on a Core connection or a session's.
    """

    def __init__(self, settle_seconds: float = 60.0) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds cannot be negative")
        self.settle = timedelta(seconds=settle_seconds)
        self._sums: dict[tuple[str, str, int], _Sums] = {}
        # The posterior last derived per (policy, segment, dim), with what it was derived from.
        self._states: dict[tuple[str, str, int], tuple[tuple[object, ...], LinearState]] = {}
        self._lock = threading.Lock()

    def state(
        self,
        session: Session | Connection,
        policy: str,
        segment: str,
        dim: int,
        ridge: float,
        prior: LinearPrior,
    ) -> LinearState:
        """The posterior of (policy, segment) after a refresh: derived again only when the refresh
        folded in new rows or the prior changed. Deriving it (A0, then the inverse of A) cost
        more than the rest of an app decision's bandit; between two rewards every decision
        asks for the same one. A state is immutable, so one can be handed to every caller."""
        key = (policy, segment, dim)
        with self._lock:
            sums = self._refreshed(session, key)
            # Rows are only ever added, so the count of those folded in names the sums.
            made_of = (
                ridge,
                tuple(sorted(prior.coordinates.items())),
                sums.observations,
                sums.last_id,
            )
            held = self._states.get(key)
            if held is not None and held[0] == made_of:
                return held[1]
            xx, xr = sums.xx.copy(), sums.xr.copy()
        a0, b0 = prior.initial(dim, ridge)
        state = LinearState.from_sums(a0 + xx, b0 + xr, made_of[2], made_of[3])
        with self._lock:
            self._states[key] = (made_of, state)
        return state

    def refresh(self, session: Session | Connection, policy: str, segment: str, dim: int) -> _Sums:
        """The sums of (policy, segment, dim) with every row read so far folded in (a copy)."""
        with self._lock:
            sums = self._refreshed(session, (policy, segment, dim))
            return _Sums(
                sums.xx.copy(), sums.xr.copy(), sums.observations, sums.last_id, sums.settled_id
            )

    def _refreshed(self, session: Session | Connection, key: tuple[str, str, int]) -> _Sums:
        """The held sums of `key` after reading the rows not folded in yet (under the lock)."""
        policy, segment, dim = key
        connection = _connection(session)
        sums = self._sums.setdefault(key, _Sums.zero(dim))
        # Taken before reading: a row whose id is settled below was committed before this.
        started = utcnow()
        after: int | None = sums.settled_id
        if sums.recent:
            # Rows above the settled id were read before: list the ids first, then read from
            # the smallest new one. New rows are almost always the newest, so that range is
            # almost always just them; a late row below folded ones re-reads those.
            ids, _ = _IDS.fetch(
                connection, {"policy": policy, "segment": segment, "after": sums.settled_id}
            )
            new = [i for (i,) in ids if i not in sums.recent]
            after = min(new) - 1 if new else None
        if after is not None:
            rows = [
                row
                for row in _rows(connection, policy, segment, after)
                if row[0] not in sums.recent
            ]
            sums.fold([(row_id, x, reward) for row_id, x, reward, _ in rows], dim)
            sums.recent.update((row_id, created_at) for row_id, _, _, created_at in rows)
        cutoff = started - self.settle
        settled = [i for i, created in sums.recent.items() if created <= cutoff]
        if settled:
            sums.settled_id = max(sums.settled_id, max(settled))
            sums.recent = {i: c for i, c in sums.recent.items() if i > sums.settled_id}
        return sums


def load_state(
    session: Session | Connection,
    policy: str,
    segment: str,
    dim: int,
    ridge: float,
    *,
    prior: LinearPrior | None = None,
    cache: ObservationCache | None = None,
) -> LinearState:
    """The posterior of (policy, segment): the prior plus every observation stored so far.

    Without a cache every row is read; with one, only the rows it has not seen yet.

    Raises:
        ValueError: a stored observation does not have `dim` features, or ridge is not positive.
    """
    if cache is not None:
        return cache.state(session, policy, segment, dim, ridge, prior or LinearPrior())
    a0, b0 = (prior or LinearPrior()).initial(dim, ridge)
    sums = _Sums.zero(dim)
    rows = _rows(_connection(session), policy, segment, 0)
    sums.fold([(row_id, x, reward) for row_id, x, reward, _ in rows], dim)
    return LinearState.from_sums(a0 + sums.xx, b0 + sums.xr, sums.observations, sums.last_id)


_OBSERVATIONS = cast(Table, LinearObservation.__table__)
_OF = (
    _OBSERVATIONS.c.policy == bindparam("policy"),
    _OBSERVATIONS.c.segment == bindparam("segment"),
    _OBSERVATIONS.c.id > bindparam("after"),
)
# The two reads of a refresh, each built once and run on the DBAPI cursor (`store.prepared`):
# between two rewards one of them is all an app decision's bandit reads.
_IDS = Prepared(select(_OBSERVATIONS.c.id).where(*_OF))
_ROWS = Prepared(
    select(
        _OBSERVATIONS.c.id, _OBSERVATIONS.c.x, _OBSERVATIONS.c.reward, _OBSERVATIONS.c.created_at
    ).where(*_OF)
)


def _connection(session: Session | Connection) -> Connection:
    """The connection to read on: a session's own (flushed first, as its ORM reads
    autoflush), or `session` itself."""
    if isinstance(session, Session):
        if session.autoflush:
            session.flush()
        return session.connection()
    return session


def _rows(
    connection: Connection, policy: str, segment: str, after_id: int
) -> list[tuple[int, list[float], float, datetime]]:
    """(id, x, reward, created_at) of the rows of (policy, segment) with an id above `after_id`."""
    rows, conversions = _ROWS.fetch(
        connection, {"policy": policy, "segment": segment, "after": after_id}
    )
    if not conversions:
        return [tuple(row) for row in rows]
    read = []
    for raw in rows:
        row = list(raw)
        for i, convert in conversions:
            row[i] = convert(row[i])
        read.append(tuple(row))
    return read
