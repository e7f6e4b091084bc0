"""Stored predictions: each person's churn risk and next-purchase probabilities, one row each.

`attune train` replaces them all at once (`replace_predictions`); features read them by user id
(`prediction_for`, `predictions_for`); erasure deletes the person's row with the rest of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from store.models import PredictionRow


@dataclass(frozen=True)
class Prediction:
    churn_risk: float | None  # None: the person never bought, so has no interval to miss
    next_purchase: dict[str, float] = field(default_factory=dict)  # category → probability
    model_version: str = ""


def replace_predictions(
    session: Session, predictions: Mapping[str, Prediction], *, computed_at: datetime
) -> int:
    """Replace every stored prediction with these (in the caller's transaction)."""
    session.execute(delete(PredictionRow))
    session.add_all(
        PredictionRow(
            user_id=user_id,
            churn_risk=p.churn_risk,
            next_purchase=p.next_purchase,
            model_version=p.model_version,
            computed_at=computed_at,
        )
        for user_id, p in predictions.items()
    )
    return len(predictions)


def prediction_for(session: Session, user_id: str) -> Prediction | None:
    row = session.get(PredictionRow, user_id)
    return None if row is None else _prediction(row)


def predictions_for(session: Session, user_ids: Sequence[str]) -> dict[str, Prediction]:
    rows = session.scalars(select(PredictionRow).where(PredictionRow.user_id.in_(list(user_ids))))
    return {row.user_id: _prediction(row) for row in rows}


def erase_prediction(session: Session, user_id: str) -> None:
    session.execute(delete(PredictionRow).where(PredictionRow.user_id == user_id))


def _prediction(row: PredictionRow) -> Prediction:
    return Prediction(row.churn_risk, dict(row.next_purchase), row.model_version)
