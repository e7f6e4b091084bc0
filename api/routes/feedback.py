"""POST /v1/feedback: a reward for a decision, which updates the bandit that made it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from agents.rewards import rewarder
from agents.services import Services
from api.auth import Caller, FeedbackCaller
from api.deps import ServicesDep
from api.gate import in_turn
from api.schemas import ArmOut, FeedbackIn, FeedbackOut
from store.bandit import get_arms
from store.decisions import get_decision
from store.models import LinearObservation

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", response_model=FeedbackOut)
async def post_feedback(
    request: Request, body: FeedbackIn, services: ServicesDep, caller: FeedbackCaller
) -> FeedbackOut:
    """Reward a decision's offer (once per decision); 404 for an unknown decision, 409 for a second reward."""
    # In turn with decisions and event batches (`api.gate`): rewards written side by side in
    # worker threads waited for SQLite's one write lock, or were refused it and ran again after
    # a pause (p99 0.56 s at 8 connections). In a worker thread still, holding the slot: on
    # PostgreSQL a reward waits for the lock on its arm's row while another worker process
    # updates it, and that wait must not hold the loop.
    out = await in_turn(request, _reward, services, body, caller, in_thread=True)
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
