"""A copy run's variants as a campaign: stored, registered as bandit arms, served, rewarded.

Each segment of a campaign is a Beta-Bernoulli bandit over its registered variants: the arms'
posteriors live in `bandit_arms` under the policy `copy:<campaign id>` with the segment's name as
the segment, and start from the policy file's `bandit_prior`. Serving a variant to a person is a
Thompson-sampling choice (`tools.bandit.ThompsonSampling`, the service's seeded generator) logged
as a decision with its propensity, so export and erasure treat it like any other decision;
feedback rewards that decision once and updates the chosen variant's posterior, so the loop
converges on the segment's best copy.

Membership and consent are checked again when serving (consent may have been withdrawn since
the copy was written). A served variant's offer is not counted by frequency caps: the decision is
logged without an offer, so the offer feedback route (`/v1/feedback`) refuses it and only
`/v1/copy/{campaign}/feedback` can reward it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from agents.copy.audience import scan_audience
from agents.copy.state import CopyRequest, CopyResult
from agents.privacy.minimize import Minimizer
from agents.privacy.rights import refuse_erased
from agents.services import Services
from policies.copy import CHANNELS
from store.bandit import ArmState, add_reward, get_arms
from store.copy import (
    get_variant,
    record_copy_reward,
    register_arm,
    registered_arms,
    save_variants,
)
from store.decisions import get_decision, log_decision
from store.erasure import lock_for_writing
from store.errors import Conflict, NotFound
from store.jobs import get_job

SERVE_RECORD = "copy-serve"


def bandit_policy(campaign_id: str) -> str:
    return f"copy:{campaign_id}"


def save_result(
    services: Services,
    result: CopyResult,
    *,
    register: bool,
    minimizer: Minimizer | None = None,
    then: Callable[[Session, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Store the variants of a run (and register those that passed, if asked); the job summary.
    `minimizer` (of the brief's free text) masks in the stored rows what the guard would miss;
    `then(session, summary)` runs in the same transaction (a job marked done with its variants)."""
    scrub = minimizer or Minimizer()
    rows = [
        scrub.value({**variant.model_dump(mode="json"), "segment_size": segment.size})
        for segment in result.segments
        for variant in segment.variants
    ]
    with services.db.session() as session:
        save_variants(session, result.campaign_id, rows)
        session.flush()
        registered = 0
        if register:
            for row in rows:
                if row["checks_passed"]:
                    registered += register_arm(
                        session, result.campaign_id, row["variant_id"], row["segment"]
                    )
        summary = _summary(result, scrub, rows, registered)
        if then is not None:
            then(session, summary)
    return summary


def _summary(
    result: CopyResult, scrub: Minimizer, rows: list[dict[str, Any]], registered: int
) -> dict[str, Any]:
    return scrub.value(
        {
            "segments": [
                {"name": s.name, "size": s.size, "variants": len(s.variants), "note": s.note}
                for s in result.segments
            ],
            "variants": len(rows),
            "registered": registered,
            "members_scanned": result.members_scanned,
            "writer": result.writer,
            "policy_version": result.policy_version,
            "degraded": result.degraded,
        }
    )


@dataclass(frozen=True)
class Arm:
    campaign_id: str
    segment: str
    variant_id: str
    alpha: float
    beta: float
    rewards_seen: int

    @property
    def estimate(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def register_variant(services: Services, campaign_id: str, variant_id: str) -> tuple[Arm, bool]:
    """Make a variant an arm of its segment; (its arm, whether it was new).

    Raises:
        NotFound: no such campaign or variant.
        Conflict: the variant's copy was withheld (it failed its checks).
    """
    with services.db.session() as session:
        variant = get_variant(session, campaign_id, variant_id)
        if not variant["checks_passed"]:
            raise Conflict(
                f"variant {variant_id!r} failed its checks and was withheld; it cannot be served"
            )
        new = register_arm(session, campaign_id, variant_id, variant["segment"])
    return _arm(services, campaign_id, variant["segment"], variant_id), new


def _arm(services: Services, campaign_id: str, segment: str, variant_id: str) -> Arm:
    prior = services.policy.policy.prior
    with services.db.session() as session:
        state = get_arms(session, bandit_policy(campaign_id), segment, [variant_id], prior)
    arm = state[variant_id]
    return Arm(campaign_id, segment, variant_id, arm.alpha, arm.beta, arm.pulls)


@dataclass(frozen=True)
class VariantChoice:
    variant_id: str
    propensity: float
    probabilities: dict[str, float]
    arm: ArmState


def choose_variant(services: Services, campaign_id: str, segment: str) -> VariantChoice:
    """Thompson sampling over the segment's registered variants.

    Raises:
        Conflict: no variant of the segment is registered.
    """
    with services.db.session() as session:
        variant_ids = registered_arms(session, campaign_id, [segment]).get(segment, [])
        if not variant_ids:
            raise Conflict(
                f"segment {segment!r} of campaign {campaign_id!r} has no registered variant; "
                "register one with POST /v1/copy/{campaign_id}/variants/{variant_id}/register"
            )
        arms = get_arms(
            session, bandit_policy(campaign_id), segment, variant_ids, services.policy.policy.prior
        )
    choice = services.tools.bandit.choose(arms)
    return VariantChoice(choice.offer_id, choice.propensity, choice.probabilities, choice.arm)


@dataclass(frozen=True)
class Served:
    decision_id: str
    segment: str
    choice: VariantChoice
    variant: dict[str, Any]


def serve(
    services: Services,
    campaign_id: str,
    user_id: str,
    *,
    segment: str | None = None,
    now: datetime | None = None,
) -> Served:
    """The variant to show this person: their segment's Thompson-sampling choice, logged.

    Raises:
        NotFound: no such campaign, or the person qualifies for none of its segments (or not
            for the one named) with registered variants.
        Conflict: the campaign is not done, or has no registered variant in the segment.
    """
    now = now or datetime.now(UTC)
    with services.db.session() as session:
        job = get_job(session, campaign_id)
        arms = registered_arms(session, campaign_id)
    if job.status != "done":
        raise Conflict(f"campaign {campaign_id!r} is {job.status}; serve it once it is done")
    request = CopyRequest.model_validate(job.request)
    segments = request.audience.resolved()
    if segment is not None:
        segments = [s for s in segments if s.name == segment]
        if not segments:
            raise NotFound(f"campaign {campaign_id!r} has no segment {segment!r}")
    spec = CHANNELS[request.channel]
    found = scan_audience(services.db, services.policy, segments, spec, now=now, only=[user_id])
    member_of = [s.name for s in segments if found[s.name].size]
    if not member_of:
        raise NotFound(
            f"user {user_id!r} does not qualify for "
            + (f"segment {segment!r}" if segment else "any segment")
            + f" of campaign {campaign_id!r} (segment rules and consent are checked now)"
        )
    chosen_segment = next((name for name in member_of if arms.get(name)), member_of[0])
    choice = choose_variant(services, campaign_id, chosen_segment)
    decision_id = uuid.uuid4().hex
    with services.db.session() as session:
        # The person's tombstone read under the decision log's write lock: one erased since
        # the audience was scanned is not logged again (an erasure holds that lock).
        lock_for_writing(session, "decisions")
        refuse_erased(services, session, user_id, None)
        variant = get_variant(session, campaign_id, choice.variant_id)
        log_decision(
            session,
            decision_id=decision_id,
            subject_key=f"user:{user_id}",
            user_id=user_id,
            channel=spec.channel.value,
            segment=chosen_segment,
            offer_id=None,  # see the module docstring: only the copy feedback route rewards it
            created_at=now,
            record={
                "schema": 1,
                "kind": SERVE_RECORD,
                "decision_id": decision_id,
                "created_at": now.isoformat(),
                "campaign_id": campaign_id,
                "segment": chosen_segment,
                "variant_id": choice.variant_id,
                "offer_id": variant.get("offer_id"),
                "item_ids": variant.get("item_ids", []),
                "choice": {
                    "policy": bandit_policy(campaign_id),
                    "segment": chosen_segment,
                    "variant_id": choice.variant_id,
                    "propensity": choice.propensity,
                    "probabilities": choice.probabilities,
                    "alpha": choice.arm.alpha,
                    "beta": choice.arm.beta,
                    "rewards_seen": choice.arm.pulls,
                },
                "versions": {"policy": services.policy.version},
            },
        )
    return Served(decision_id, chosen_segment, choice, variant)


def reward(services: Services, campaign_id: str, decision_id: str, value: float) -> Arm:
    """Reward a served variant once; its arm's posterior moves by `value` in [0, 1].

    Raises:
        NotFound: no such decision in this campaign.
        Conflict: the decision was already rewarded.
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError("a reward is in [0, 1]")
    with services.db.session() as session:
        decision = get_decision(session, decision_id)
        record = decision.record
        if record.get("kind") != SERVE_RECORD or record.get("campaign_id") != campaign_id:
            raise NotFound(f"campaign {campaign_id!r} served no decision {decision_id!r}")
        record_copy_reward(session, decision_id, value)
        add_reward(
            session,
            bandit_policy(campaign_id),
            record["segment"],
            record["variant_id"],
            value,
            services.policy.policy.prior(record["variant_id"]),
        )
    return _arm(services, campaign_id, record["segment"], record["variant_id"])
