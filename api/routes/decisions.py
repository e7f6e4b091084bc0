"""GET /v1/decisions/{id}: the logged decision, PII-free."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path

from api.auth import DecisionsCaller
from api.deps import ServicesDep
from api.schemas import DecisionOut
from store.decisions import get_decision, get_reward

router = APIRouter(prefix="/v1", tags=["decisions"])


@router.get("/decisions/{decision_id}", response_model=DecisionOut)
def read_decision(
    services: ServicesDep,
    caller: DecisionsCaller,
    decision_id: str = Path(min_length=1, max_length=64),
) -> DecisionOut:
    """The decision as logged: features, candidates, eligible offers, rules fired, versions."""
    with services.db.session() as session:
        row = get_decision(session, decision_id)
        if caller.bound_user is not None:
            caller.act_for(row.user_id, what="this decision")
        elif not (caller.has("admin") or caller.has("eval")):
            raise HTTPException(403, "reading decisions needs the 'admin' or 'eval' scope")
        reward = get_reward(session, decision_id)
    return DecisionOut(
        decision_id=row.decision_id,
        created_at=row.created_at.isoformat(),
        channel=row.channel,
        offer_id=row.offer_id,
        reward=reward,
        record=row.record,
    )
