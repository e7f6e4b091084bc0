"""Copy variants of a campaign, the ones registered as bandit arms, and rewards of served copy.

A served variant is logged as a decision (`store.decisions.log_decision`), so export and erasure
find it with the person's other decisions; its reward is stored once, as any decision's is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.errors import Conflict, NotFound
from store.models import CopyArmRow, CopyVariantRow, RewardRow


def save_variants(session: Session, campaign_id: str, variants: Iterable[dict[str, Any]]) -> int:
    """Store a campaign's variants (each a dict with `variant_id` and `segment`), in order."""
    count = 0
    for position, data in enumerate(variants):
        session.add(
            CopyVariantRow(
                campaign_id=campaign_id,
                variant_id=data["variant_id"],
                segment=data["segment"],
                position=position,
                data=data,
            )
        )
        count += 1
    return count


def get_variants(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(CopyVariantRow)
        .where(CopyVariantRow.campaign_id == campaign_id)
        .order_by(CopyVariantRow.position)
    )
    return [row.data for row in rows]


def get_variant(session: Session, campaign_id: str, variant_id: str) -> dict[str, Any]:
    row = session.get(CopyVariantRow, (campaign_id, variant_id))
    if row is None:
        raise NotFound(f"campaign {campaign_id!r} has no variant {variant_id!r}")
    return row.data


def register_arm(session: Session, campaign_id: str, variant_id: str, segment: str) -> bool:
    """Make the variant an arm of its segment; False if it already was one."""
    if session.get(CopyArmRow, (campaign_id, variant_id)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(CopyArmRow(campaign_id=campaign_id, variant_id=variant_id, segment=segment))
    except IntegrityError:
        return False  # registered by a concurrent request
    return True


def registered_arms(
    session: Session, campaign_id: str, segments: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Segment → the variant ids registered in it."""
    query = select(CopyArmRow.segment, CopyArmRow.variant_id).where(
        CopyArmRow.campaign_id == campaign_id
    )
    if segments is not None:
        query = query.where(CopyArmRow.segment.in_(segments))
    arms: dict[str, list[str]] = {}
    for segment, variant_id in session.execute(query.order_by(CopyArmRow.variant_id)):
        arms.setdefault(segment, []).append(variant_id)
    return arms


def record_copy_reward(session: Session, decision_id: str, reward: float) -> None:
    """The one reward of a served variant; a second one is a Conflict."""
    try:
        with session.begin_nested():
            session.add(RewardRow(decision_id=decision_id, reward=reward))
    except IntegrityError as error:
        raise Conflict(f"decision {decision_id!r} was already rewarded") from error
