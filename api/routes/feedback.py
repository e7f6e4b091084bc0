"""POST /v1/feedback: a reward for a decision, which updates the bandit that made it."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from agents.rewards import rewarder
from agents.services import Services
from api.auth import Caller, FeedbackCaller
from api.deps import ServicesDep
from api.schemas import ArmOut, FeedbackIn, FeedbackOut
from store.bandit import get_arms
from store.decisions import get_decision
from store.models import LinearObservation

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", response_model=FeedbackOut)
async def post_feedback(
    body: FeedbackIn, services: ServicesDep, caller: FeedbackCaller
) -> FeedbackOut:
    """Reward a decision's offer (once per decision); 404 for an unknown decision, 409 for a second reward."""
    out = await run_in_threadpool(_reward, services, body, caller)
    services.metrics.rewards.labels(policy=out.policy).observe(out.reward)
    return out


def _reward(services: Services, body: FeedbackIn, caller: Caller) -> FeedbackOut:
    with services.db.session() as session:
        if caller.bound_user is not None:
            caller.act_for(get_decision(session, body.decision_id).user_id, what="this decision")
        done = rewarder(services, observe=False).reward(
            session, body.decision_id, body.reward, source="feedback"
        )
        decision, policy = done.decision, done.policy
        assert decision.offer_id is not None  # a decision without an offer is a Conflict
        if decision.record["choice"].get("features") is not None:  # a linear bandit
            observations = session.scalar(
                select(func.count()).where(
                    LinearObservation.policy == policy,
                    LinearObservation.segment == decision.segment,
                )
            )
            return FeedbackOut(
                decision_id=body.decision_id,
                reward=body.reward,
                policy=policy,
                observations=observations,
            )
        prior = rewarder(services).prior(policy, decision.offer_id)
        arm = get_arms(session, policy, decision.segment, [decision.offer_id], lambda _: prior)[
            decision.offer_id
        ]
    return FeedbackOut(
        decision_id=body.decision_id,
        reward=body.reward,
        policy=policy,
        arm=ArmOut(
            offer_id=arm.offer_id,
            segment=decision.segment,
            alpha=arm.alpha,
            beta=arm.beta,
            rewards_seen=arm.pulls,
            estimate=round(arm.mean, 4),
        ),
    )
