"""Personalizer's Rank and Reward: rank caller-supplied actions, reward the choice by event id."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from agents.services import Services
from api.auth import Caller, DecideCaller, FeedbackCaller
from api.deps import ServicesDep
from api.gate import in_turn
from api.schemas import (
    RankActivateOut,
    RankedActionOut,
    RankIn,
    RankOut,
    RankRewardIn,
    RankRewardOut,
    RankSlotOut,
    SlotRewardOut,
)
from store.errors import NotFound
from store.linear import add_observation, load_state
from store.models import LinearObservation, utcnow
from store.rank import (
    RankEvent,
    activate,
    add_rank_event,
    get_rank_event,
    observation_id,
    record_slot_rewards,
)
from store.schemas import Channel
from store.users import Subject
from tools.context import RunContext
from tools.linear import LinearConfig
from tools.profile import lookup_profile
from tools.rank import DIM, POLICY, SEGMENT, action_vector, flatten, rank_slots

router = APIRouter(prefix="/v1", tags=["rank"])
EventId = Path(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
SINGLE_SLOT = "main"  # the slot id of a rank without slots
RIDGE = LinearConfig().ridge


@router.post("/rank", response_model=RankOut)
async def post_rank(
    request: Request, body: RankIn, services: ServicesDep, caller: DecideCaller
) -> RankOut:
    """Rank your actions for a context (excluded actions, deferred activation, multi-slot)."""
    user_id = body.user_id if body.user_id is not None else caller.bound_user
    caller.act_for(user_id, what="a rank for another user")
    # Python and SQL that never waits on the network: on the loop, in turn with decisions
    # (`api.gate`), not in a worker thread contending with them for the GIL.
    return await in_turn(request, _rank, services, body, caller, user_id)


@router.post("/rank/{event_id}/activate", response_model=RankActivateOut)
async def post_activate(
    request: Request, services: ServicesDep, caller: FeedbackCaller, event_id: str = EventId
) -> RankActivateOut:
    """Mark a deferred rank as shown: its rewards count from now on."""
    # Writes in turn with the others (`api.gate`), in a worker thread: the event's row is
    # locked for update, and on PostgreSQL a wait for another process's lock must not hold
    # the loop.
    return await in_turn(request, _activate, services, caller, event_id, in_thread=True)


def _activate(services: Services, caller: Caller, event_id: str) -> RankActivateOut:
    window = timedelta(seconds=services.settings.rank_reward_window_s)
    with services.db.session() as session:
        _own(get_rank_event(session, event_id, for_update=True), caller)
        event = activate(session, event_id, window)
    return RankActivateOut(
        event_id=event.event_id, activated=event.activated, expires_at=event.expires_at.isoformat()
    )


@router.post("/rank/{event_id}/reward", response_model=RankRewardOut)
async def post_rank_reward(
    request: Request,
    body: RankRewardIn,
    services: ServicesDep,
    caller: FeedbackCaller,
    event_id: str = EventId,
) -> RankRewardOut:
    """Reward a rank's choice (per slot for multi-slot); the model learns from it once."""
    # As rewards for decisions (`api.routes.feedback`): in turn, in a worker thread.
    return await in_turn(request, _reward, services, body, caller, event_id, in_thread=True)


def _reward(services: Services, body: RankRewardIn, caller: Caller, event_id: str) -> RankRewardOut:
    with services.db.session() as session:
        event = _own(get_rank_event(session, event_id, for_update=True), caller)
        slot_ids = [slot["slot_id"] for slot in event.slots]
        if body.value is not None:
            if slot_ids != [SINGLE_SLOT]:
                raise _field("value", "this event has slots; send slots: [{slot_id, value}]")
            rewards = {SINGLE_SLOT: body.value}
        else:
            assert body.slots is not None
            rewards = {s.slot_id: s.value for s in body.slots}
        event, fresh = record_slot_rewards(session, event_id, rewards)
        for slot in fresh:
            add_observation(
                session,
                event.policy,
                SEGMENT,
                slot["x"],
                slot["reward"],
                offer_id=slot["action_id"],
                decision_id=observation_id(event_id, slot_ids.index(slot["slot_id"])),
            )
        session.flush()
        observations = session.scalar(
            select(func.count()).where(
                LinearObservation.policy == event.policy, LinearObservation.segment == SEGMENT
            )
        )
    by_id = {slot["slot_id"]: slot for slot in event.slots}
    return RankRewardOut(
        event_id=event_id,
        rewarded=[
            SlotRewardOut(slot_id=s, action_id=by_id[s]["action_id"], value=v)
            for s, v in rewards.items()
        ],
        duplicate=not fresh,
        observations=observations or 0,
    )


def _rank(services: Services, body: RankIn, caller: Caller, user_id: str | None) -> RankOut:
    contextual = services.tools.contextual
    assert contextual is not None  # the factory always builds the linear bandits
    bandit = contextual.bandit("lints")
    context = flatten(body.context_features)
    if user_id is not None:
        context.update(_person(services, user_id))
    actions = {a.id: flatten(a.features) for a in body.actions}
    allowed = [a.id for a in body.actions if a.id not in set(body.excluded_actions)]
    slots_in = body.slots or []
    plan: list[tuple[str, dict[str, np.ndarray]]] = []
    if not slots_in:
        plan.append(
            (SINGLE_SLOT, {a: action_vector(context, a, actions[a]) for a in allowed}),
        )
    for slot in slots_in:
        features = flatten(slot.features)
        plan.append(
            (
                slot.id,
                {
                    a: action_vector(context, a, actions[a], features)
                    for a in allowed
                    if a not in set(slot.excluded_actions)
                },
            )
        )
    window = timedelta(seconds=services.settings.rank_reward_window_s)
    event_id = body.event_id or secrets.token_hex(12)
    with services.db.session() as session:
        state = load_state(session, POLICY, SEGMENT, DIM, RIDGE, cache=contextual.cache)
        try:
            chosen = rank_slots(bandit, state, plan)
        except ValueError as error:
            raise _field("slots", str(error)) from error
        baselines = {s.id: s.baseline_action for s in slots_in}
        stored: list[dict[str, Any]] = [
            {
                "slot_id": c.slot_id,
                "action_id": c.action_id,
                "probability": round(c.probability, 6),
                "baseline_action": baselines.get(c.slot_id),
                "x": list(c.features),
                "reward": None,
            }
            for c in chosen
        ]
        event = add_rank_event(
            session,
            event_id,
            created_by=caller.actor,
            user_id=user_id,
            policy=POLICY,
            slots=stored,
            activated=not body.defer_activation,
            window=window,
        )
    first = chosen[0]
    rest = sorted(
        (a for a in first.scores if a != first.action_id),
        key=lambda a: (-first.scores[a], a),
    )
    return RankOut(
        event_id=event.event_id,
        reward_action_id=first.action_id,
        ranking=[
            RankedActionOut(
                id=a, probability=round(first.probabilities[a], 6), score=round(first.scores[a], 6)
            )
            for a in [first.action_id, *rest]
        ],
        slots=(
            [
                RankSlotOut(
                    id=c.slot_id,
                    reward_action_id=c.action_id,
                    probability=round(c.probability, 6),
                    baseline_action=baselines[c.slot_id],
                )
                for c in chosen
            ]
            if slots_in
            else None
        ),
        activated=event.activated,
        expires_at=event.expires_at.isoformat(),
        policy=POLICY,
    )


def _person(services: Services, user_id: str) -> dict[str, float]:
    """The person's profile as context features, when their consent allows profiling."""
    ctx = RunContext(services.tools, Subject(user_id, None), Channel.web, utcnow())
    profile = lookup_profile(ctx)
    if not profile.known:
        raise NotFound(f"user_id: user {user_id!r} does not exist")
    if not profile.personalized:
        return {}
    top = max(profile.category_affinity, key=profile.category_affinity.__getitem__, default=None)
    person: dict[str, Any] = {
        "segment": profile.segment,
        "price_band": profile.price_band or "none",
    }
    if top is not None:
        person["top_category"] = top
    return flatten([person], prefix="person")


def _own(event: RankEvent, caller: Caller) -> RankEvent:
    """The event, if this caller made it (or is an admin); others get a 404."""
    if event.created_by != caller.actor and not caller.has("admin"):
        raise NotFound(f"event_id: no rank event {event.event_id!r}")
    return event


def _field(field: str, problem: str) -> RequestValidationError:
    """A 422 problem document whose `errors` name the field, as request validation makes."""
    return RequestValidationError([{"loc": ("body", field), "msg": problem, "type": "value_error"}])
