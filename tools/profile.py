"""Profile lookup: the subject's features, consent and lifecycle segment, without PII."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from policies.engine import Facts, Firing
from store.db import orm_session
from store.features import Features, person_features, read_features
from store.person import Person, read_person
from store.schemas import Purpose, UserRecord
from tools.context import RunContext
from tools.schemas import ProfileView, RuleFired


def lookup_profile(ctx: RunContext) -> ProfileView:
    """Look up the person this request is about: their interests, recent activity and consent."""
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["profile"]


def subject_record(ctx: RunContext) -> UserRecord | None:
    """The stored user record, PII included, for the guard only; never handed to a model."""
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["record"]


def subject_facts(ctx: RunContext) -> Facts:
    """What the policy rules need to know about the subject at this moment."""
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["facts"]


def subject_holdout(ctx: RunContext) -> Firing | None:
    """The holdout rule whose control group this person is in on this channel, if any."""
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["holdout"]


def subject_blocked(ctx: RunContext, guard: str) -> Firing | None:
    """The consent rule that blocks `guard` ("profiling", "llm", "content") for this person."""
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["blocked"].get(guard)


def subject_features(ctx: RunContext) -> Features:
    if "profile" not in ctx.memo:
        _load(ctx)
    return ctx.memo["features"]


def _load(ctx: RunContext) -> None:
    with ctx.deps.db.connect() as connection:
        person = read_person(connection, ctx.subject.user_id, ctx.subject.anonymous_id)
        settle_profile(ctx, connection, person)


def settle_profile(ctx: RunContext, session: Session | Connection, person: Person) -> None:
    """Work out what the tools ask of the profile from `person` (read in `session`, which the
    rare rebuild of a feature row uses) and keep it in the request's memo."""
    since = ctx.deps.policy.purchases_since(ctx.now)  # the purchases the rules read, no older
    if person.subject != ctx.subject:
        # Only an anonymous subject can differ: their id was linked to someone after the
        # request was bound to it. The request stays about the anonymous visitor.
        with orm_session(session) as orm:
            record, features = (
                None,
                read_features(orm, ctx.subject, as_of=ctx.now, purchases_since=since),
            )
    else:
        record = person.record
        features = person_features(session, person, as_of=ctx.now, purchases_since=since)
    consent = record.consent if record else {purpose: False for purpose in Purpose}
    probe = Facts(age=None, consent=consent, channel=ctx.channel, now=ctx.now)
    blocked = {
        guard: firing
        for guard in ("profiling", "llm", "content")
        if (firing := ctx.deps.policy.blocked(guard, probe)) is not None
    }
    if "profiling" in blocked:
        # Only what the rules need (no re-recommending a purchase); nothing that profiles them.
        features = Features(as_of=ctx.now, purchases=features.purchases)
    age = record.profile.age_on(ctx.now.date()) if record else None
    facts = Facts(
        age=age,
        consent=consent,
        channel=ctx.channel,
        now=ctx.now,
        purchases=features.purchases,
        locale=record.profile.locale if record else None,
    )
    personalized, firings = ctx.deps.policy.personalization(facts)
    firings = [*firings, *blocked.values()]
    holdout = ctx.deps.policy.holdout(ctx.subject.key, ctx.channel)
    if holdout is not None:
        personalized, firings = False, [*firings, holdout]
    ctx.memo.update(
        record=record,
        features=features,
        facts=facts,
        holdout=holdout,
        blocked=blocked,
        profile=ProfileView(
            subject_key=ctx.subject.key,
            user_id=ctx.subject.user_id,
            known=record is not None,
            age=age,
            consent=consent,
            personalized=personalized,
            segment=lifecycle_segment(features),
            event_count=features.event_count,
            recency_days=features.recency_days,
            frequency_30d=features.frequency_30d,
            monetary_total=features.monetary_total,
            purchase_count=features.purchase_count,
            days_since_last_purchase=features.days_since_last_purchase,
            category_affinity=features.category_affinity,
            price_band=features.price_band,
            recent_item_ids=list(features.recent_item_ids),
            churn_risk=features.churn_risk,
            next_purchase=features.next_purchase,
            rules_fired=rules_fired(firings),
        ),
    )


def lifecycle_segment(features: Features) -> str:
    """New, active, lapsing or lapsed, from recency and frequency."""
    if features.is_cold:
        return "new"
    if features.recency_days is not None and features.recency_days > 60:
        return "lapsed"
    if features.frequency_30d == 0:
        return "lapsing"
    return "active"


def rules_fired(firings: Iterable[Firing]) -> list[RuleFired]:
    return [
        RuleFired(rule_id=f.rule_id, effect=f.effect, reason=f.reason, targets=list(f.targets))
        for f in firings
    ]
