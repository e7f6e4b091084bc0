"""Bandit state: a Beta posterior per (policy, segment, offer), shared by every worker.

Updates are single SQL increments (`alpha = alpha + :x`), so concurrent feedback from several
workers never loses an update, whatever the database.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import (
    Connection,
    CursorResult,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import BanditArm, DecisionRow, UTCDateTime, utcnow


@dataclass(frozen=True)
class ArmState:
    offer_id: str
    alpha: float
    beta: float
    pulls: int

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


_arms = BanditArm.__table__


def get_arms(
    session: Session,
    policy: str,
    segment: str,
    offer_ids: Sequence[str],
    prior: Callable[[str], tuple[float, float]],
) -> dict[str, ArmState]:
    """The posterior of each offer; offers never rewarded in this segment have their prior."""
    found = read_arms(session, [(policy, segment)], offer_ids).get((policy, segment), {})
    return {
        offer_id: found.get(offer_id) or ArmState(offer_id, *prior(offer_id), 0)
        for offer_id in offer_ids
    }


def read_arms(
    session: Session, states: Sequence[tuple[str, str]], offer_ids: Sequence[str]
) -> dict[tuple[str, str], dict[str, ArmState]]:
    """The stored arms of these offers in each (policy, segment) of `states`, in one SELECT
    (columns through SQLAlchemy Core, no ORM objects); arms never rewarded are absent."""
    if not states or not offer_ids:
        return {}
    rows = session.execute(
        select(
            _arms.c.policy, _arms.c.segment, _arms.c.offer_id, _arms.c.alpha, _arms.c.beta,
            _arms.c.pulls,
        ).where(
            or_(*(and_(_arms.c.policy == p, _arms.c.segment == s) for p, s in states)),
            _arms.c.offer_id.in_(list(offer_ids)),
        )
    )  # fmt: skip
    found: dict[tuple[str, str], dict[str, ArmState]] = {}
    for policy, segment, offer_id, alpha, beta, pulls in rows:
        found.setdefault((policy, segment), {})[offer_id] = ArmState(offer_id, alpha, beta, pulls)
    return found


@dataclass(frozen=True)
class OfferStateQuery:
    """What a decision's offer tools read: the offers shown to the subject since `since` (none
    read when it is None), and the stored arms of `offer_ids` in each (policy, segment) of
    `states` (none read when either is empty)."""

    since: datetime | None
    states: tuple[tuple[str, str], ...]
    offer_ids: tuple[str, ...]

    @functools.cached_property
    def shape(self) -> tuple[bool, int, int, int]:
        """What the statement looks like: exposures or not, and how many policies, segments
        and offers its arms branch names (0: no arms branch)."""
        if not self.states or not self.offer_ids:
            return self.since is not None, 0, 0, 0
        policies = {policy for policy, _ in self.states}
        segments = {segment for _, segment in self.states}
        return self.since is not None, len(policies), len(segments), len(self.offer_ids)

    def params(self) -> dict[str, Any]:
        """The values of the statement's parameters (`offer_state_selects`)."""
        if not self.shape[1]:
            return {"since": self.since}
        return {"since": self.since} | _arm_params(self.states, self.offer_ids)

    def rows(
        self, rows: Iterable[Sequence[Any]]
    ) -> tuple[list[tuple[str, str, datetime]], dict[tuple[str, str], dict[str, ArmState]]]:
        """The offers shown and the arms, from the rows of `offer_state_selects` (the seven
        columns of `OFFER_STATE_COLUMNS`, last in each row)."""
        wanted = set(self.states)
        shown: list[tuple[str, str, datetime]] = []
        arms: dict[tuple[str, str], dict[str, ArmState]] = {}
        for offer_id, where, at, policy, alpha, beta, pulls in rows:
            if policy is None:  # a decision that showed an offer
                shown.append((str(offer_id), where, at))
            elif (policy, where) in wanted:
                arms.setdefault((policy, where), {})[offer_id] = ArmState(
                    offer_id, alpha, beta, pulls
                )
        return shown, arms


@functools.lru_cache(maxsize=64)
def _arm_params(states: tuple[tuple[str, str], ...], offer_ids: tuple[str, ...]) -> dict[str, Any]:
    """The arms branch's parameters: the same for every decision until the offers or the
    policies change, so worked out once (callers copy it)."""
    values: dict[str, Any] = {}
    for name, found in (
        ("policy", sorted({policy for policy, _ in states})),
        ("segment", sorted({segment for _, segment in states})),
        ("offer", offer_ids),
    ):
        values.update((f"{name}_{n}", value) for n, value in enumerate(found))
    return values


# The columns `offer_state_selects` read, in this order, after the ones they are padded with.
OFFER_STATE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("offer_id", String),
    ("segment", String),  # an exposure's channel; an arm's segment
    ("at", UTCDateTime),  # when an offer was shown
    ("policy", String),  # an arm's policy; NULL for an exposure
    ("alpha", Float),
    ("beta", Float),
    ("pulls", Integer),
)


def offer_state_selects(
    subject_key: Any, shape: tuple[bool, int, int, int], pad: Sequence[Any] = ()
) -> list[Any]:
    """The SELECTs of `OfferStateQuery` (to be joined by UNION ALL): the offers shown to
    `subject_key` (an expression) since `:since`, and the arms of `:offer_0`... in the policies
    `:policy_0`... and the segments `:segment_0`... — a superset of the (policy, segment) pairs
    when both vary (a few rows), narrowed in `OfferStateQuery.rows`. Each parameter is its own,
    so the statement is built once per shape and SQLAlchemy compiles it once: an `expanding`
    IN list is rendered again on every execution. Each row starts with a NULL of each type of
    `pad`, so that the SELECTs can follow another in a UNION ALL."""
    since, policies, segments, offers = shape
    decisions = DecisionRow.__table__
    nulls = [sa.cast(null(), type_) for type_ in pad]
    selects = []
    if since:
        selects.append(
            select(
                *nulls,
                decisions.c.offer_id,
                decisions.c.channel,
                decisions.c.created_at,
                *(sa.cast(null(), type_) for _, type_ in OFFER_STATE_COLUMNS[3:]),
            ).where(
                decisions.c.subject_key == subject_key,
                decisions.c.created_at >= bindparam("since"),
                decisions.c.offer_id.is_not(None),
            )
        )
    if policies:
        selects.append(
            select(
                *nulls,
                _arms.c.offer_id,
                _arms.c.segment,
                sa.cast(null(), UTCDateTime),
                _arms.c.policy,
                _arms.c.alpha,
                _arms.c.beta,
                _arms.c.pulls,
            ).where(
                _arms.c.policy.in_([bindparam(f"policy_{n}") for n in range(policies)]),
                _arms.c.segment.in_([bindparam(f"segment_{n}") for n in range(segments)]),
                _arms.c.offer_id.in_([bindparam(f"offer_{n}") for n in range(offers)]),
            )
        )
    return selects


_OFFER_STATE: dict[tuple[bool, int, int, int], Any] = {}


def read_offer_state(
    session: Session | Connection,
    subject_key: str,
    since: datetime | None,
    states: Sequence[tuple[str, str]],
    offer_ids: Sequence[str],
) -> tuple[list[tuple[str, str, datetime]], dict[tuple[str, str], dict[str, ArmState]]]:
    """The two reads of a decision's offer tools as one SELECT (a UNION ALL, built once per
    shape): the offers shown to `subject_key` since `since` (`store.decisions.
    offer_exposure_times`; none read when `since` is None) and the stored arms of `offer_ids`
    in each of `states` (`read_arms`). A decision reads them with the person
    (`store.person.read_person`)."""
    query = OfferStateQuery(since, tuple(sorted(set(states))), tuple(offer_ids))
    shape = query.shape
    if not shape[0] and not shape[1]:
        return [], {}
    statement = _OFFER_STATE.get(shape)
    if statement is None:
        selects = offer_state_selects(bindparam("subject_key", type_=String), shape)
        union: Any = union_all  # mypy 2.4 fails on its overloads with a list of SELECTs
        statement = _OFFER_STATE.setdefault(
            shape, selects[0] if len(selects) == 1 else union(*selects)
        )
    return query.rows(session.execute(statement, {"subject_key": subject_key, **query.params()}))


def add_reward(
    session: Session,
    policy: str,
    segment: str,
    offer_id: str,
    reward: float,
    prior: tuple[float, float],
) -> None:
    """Add a reward in [0, 1] to an arm: alpha += reward, beta += 1 - reward, atomically."""
    values = {
        "alpha": BanditArm.alpha + reward,
        "beta": BanditArm.beta + (1.0 - reward),
        "pulls": BanditArm.pulls + 1,
        "updated_at": utcnow(),
    }
    where = (
        BanditArm.policy == policy,
        BanditArm.segment == segment,
        BanditArm.offer_id == offer_id,
    )
    updated = cast(
        CursorResult[Any], session.execute(update(BanditArm).where(*where).values(**values))
    )
    if updated.rowcount:
        return
    try:
        with session.begin_nested():
            session.add(
                BanditArm(
                    policy=policy,
                    segment=segment,
                    offer_id=offer_id,
                    alpha=prior[0] + reward,
                    beta=prior[1] + 1.0 - reward,
                    pulls=1,
                )
            )
    except IntegrityError:
        # Another worker created the row first: add to it instead.
        session.execute(update(BanditArm).where(*where).values(**values))
