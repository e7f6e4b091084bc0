"""Attribution windows and attributed events: which decision an event answers, and what it earns.

A window is opened with each logged decision (`store.decisions.append_decision`) and names what the decision showed
(its items and offer) and to whom (its subject key). The rules that turn events into rewards
live in `tools.rewards`; this module only stores and finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from store.models import Attribution, RewardSource, RewardWindow

# The windows of one person that one event is matched against, newest first. A person shown
# more decisions than this within one window has the older ones left out of attribution.
MAX_OPEN_WINDOWS = 50


def window_of(session: Session, decision_id: str) -> RewardWindow | None:
    return session.get(RewardWindow, decision_id)


def latest_window(
    session: Session,
    subject_keys: Sequence[str],
    *,
    item_id: str,
    offer_id: str | None,
    at: datetime,
) -> RewardWindow | None:
    """The latest decision shown to this person, open at `at`, that showed this item or offer."""
    windows = session.scalars(
        select(RewardWindow)
        .where(
            RewardWindow.subject_key.in_(subject_keys),
            RewardWindow.opened_at <= at,
            RewardWindow.closes_at >= at,
        )
        .order_by(RewardWindow.opened_at.desc())
        .limit(MAX_OPEN_WINDOWS)
    )
    for window in windows:
        if item_id in window.item_ids or (offer_id is not None and offer_id == window.offer_id):
            return window
    return None


def attributed(session: Session, decision_id: str) -> list[Attribution]:
    return list(
        session.scalars(
            select(Attribution)
            .where(Attribution.decision_id == decision_id)
            .order_by(Attribution.ts, Attribution.event_id)
        )
    )


def due_windows(session: Session, now: datetime, limit: int) -> list[RewardWindow]:
    """Windows closed by `now`, oldest first."""
    return list(
        session.scalars(
            select(RewardWindow)
            .where(RewardWindow.closes_at <= now)
            .order_by(RewardWindow.closes_at, RewardWindow.decision_id)
            .limit(limit)
        )
    )


def close_window(session: Session, decision_id: str) -> None:
    session.execute(delete(RewardWindow).where(RewardWindow.decision_id == decision_id))


def reward_source(session: Session, decision_id: str) -> RewardSource | None:
    return session.get(RewardSource, decision_id)


def delete_for_decisions(session: Session, decision_ids: Sequence[str]) -> int:
    """Remove what this module holds about these decisions (erasure, pruning)."""
    removed = 0
    for table in (Attribution, RewardSource, RewardWindow):
        result = session.execute(delete(table).where(table.decision_id.in_(decision_ids)))
        removed += getattr(result, "rowcount", 0) or 0
    return removed
