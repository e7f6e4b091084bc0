"""Bandit state: a Beta posterior per (policy, segment, offer), shared by every worker.

Updates are single SQL increments (`alpha = alpha + :x`), so concurrent feedback from several
workers never loses an update, whatever the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def _offer_state_statements() -> dict[tuple[bool, bool], Any]:
    """`read_offer_state`'s SELECTs, built once, by what they read: (exposures, arms)."""
    decisions = DecisionRow.__table__
    shown = select(
        decisions.c.offer_id,
        decisions.c.channel,
        decisions.c.created_at,
        sa.cast(null(), String).label("policy"),
        sa.cast(null(), Float).label("alpha"),
        sa.cast(null(), Float).label("beta"),
        sa.cast(null(), Integer).label("pulls"),
    ).where(
        decisions.c.subject_key == bindparam("subject_key"),
        decisions.c.created_at >= bindparam("since"),
        decisions.c.offer_id.is_not(None),
    )
    # The arms of each policy read in each segment: a superset of the (policy, segment) pairs
    # asked for when both vary (a few rows), narrowed to the pairs in Python.
    arms = select(
        _arms.c.offer_id,
        _arms.c.segment,
        sa.cast(null(), UTCDateTime),
        _arms.c.policy,
        _arms.c.alpha,
        _arms.c.beta,
        _arms.c.pulls,
    ).where(
        _arms.c.policy.in_(bindparam("policies", expanding=True)),
        _arms.c.segment.in_(bindparam("segments", expanding=True)),
        _arms.c.offer_id.in_(bindparam("offer_ids", expanding=True)),
    )
    return {(True, False): shown, (False, True): arms, (True, True): union_all(shown, arms)}


_OFFER_STATE = _offer_state_statements()


def read_offer_state(
    session: Session | Connection,
    subject_key: str,
    since: datetime | None,
    states: Sequence[tuple[str, str]],
    offer_ids: Sequence[str],
) -> tuple[list[tuple[str, str, datetime]], dict[tuple[str, str], dict[str, ArmState]]]:
    """The two reads of a decision's offer tools as one SELECT (a UNION ALL, built once): the
    offers shown to `subject_key` since `since` (`store.decisions.offer_exposure_times`; none
    read when `since` is None) and the stored arms of `offer_ids` in each of `states`
    (`read_arms`)."""
    wanted = set(states) if offer_ids else set()
    if since is None and not wanted:
        return [], {}
    statement = _OFFER_STATE[since is not None, bool(wanted)]
    shown: list[tuple[str, str, datetime]] = []
    arms: dict[tuple[str, str], dict[str, ArmState]] = {}
    rows = session.execute(
        statement,
        {
            "subject_key": subject_key,
            "since": since,
            "policies": sorted({policy for policy, _ in wanted}),
            "segments": sorted({segment for _, segment in wanted}),
            "offer_ids": list(offer_ids),
        },
    )
    for offer_id, where, at, policy, alpha, beta, pulls in rows:
        if policy is None:  # a decision that showed an offer
            shown.append((str(offer_id), where, at))
        elif (policy, where) in wanted:
            arms.setdefault((policy, where), {})[offer_id] = ArmState(offer_id, alpha, beta, pulls)
    return shown, arms


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
