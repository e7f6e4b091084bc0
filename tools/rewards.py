"""Rewards from behaviour: events attributed to decisions, turned into one bandit reward each.

The reward policy is the policy file's `rewards` section (`policies.rules.RewardPolicy`). Every
path that rewards a decision — `/v1/feedback`, an event naming its decision, the sweep that
closes windows — goes through `Rewarder.reward`, which writes the decision's one reward row
(its primary key is the decision id: a second writer gets a Conflict and changes nothing), the
reward's source and events, and the bandit's update, in the caller's transaction. Retries,
concurrent batches, several workers and restarts therefore reward a decision exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from policies.engine import PolicyEngine
from store.attribution import (
    attributed,
    close_window,
    due_windows,
    latest_window,
    window_of,
)
from store.bandit import add_reward
from store.decisions import record_reward
from store.errors import Conflict
from store.linear import add_observation
from store.models import Attribution, DecisionRow, RewardSource
from store.schemas import Event, EventType
from store.users import Subject, resolve_subject

# The suffix of a challenger's bandit state: it learns from its own arm only.
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Rewarded:
    decision: DecisionRow
    reward: float
    policy: str
    source: str
    event_ids: list[str]


@dataclass(frozen=True)
class Settled:
    closed: int  # windows closed
    rewarded: int  # decisions rewarded by closing them


@dataclass
class Rewarder:
    """Rewards decisions for the live policy (and the challenger of its experiment)."""

    policy: PolicyEngine
    challenger: PolicyEngine | None = None
    observe: Callable[[str, float], None] = lambda policy, reward: None  # metrics

    def reward(
        self,
        session: Session,
        decision_id: str,
        reward: float,
        *,
        source: str,
        event_ids: Sequence[str] = (),
    ) -> Rewarded:
        """Give a decision its one reward and update the bandit that chose its offer.

        Raises:
            NotFound: no such decision.
            Conflict: it showed no offer, or it was rewarded already.
        """
        decision = record_reward(session, decision_id, reward)
        assert decision.offer_id is not None  # record_reward refuses decisions without an offer
        choice = decision.record.get("choice")
        if not choice:
            raise Conflict(f"decision {decision_id!r} logged no bandit choice to reward")
        session.add(RewardSource(decision_id=decision_id, source=source, event_ids=list(event_ids)))
        policy = choice["policy"]
        if choice.get("features") is not None:  # a linear bandit: it learns from the context
            add_observation(
                session,
                policy,
                decision.segment,
                choice["features"],
                reward,
                offer_id=decision.offer_id,
                decision_id=decision.decision_id,
            )
        else:
            engine = self._engine_of(policy)
            prior = engine.policy.prior(decision.offer_id)
            add_reward(session, policy, decision.segment, decision.offer_id, reward, prior)
        self.observe(policy, reward)
        return Rewarded(decision, reward, policy, source, list(event_ids))

    def prior(self, policy: str, offer_id: str) -> tuple[float, float]:
        return self._engine_of(policy).policy.prior(offer_id)

    def _engine_of(self, bandit: str) -> PolicyEngine:
        if bandit.endswith(f":{CHALLENGER}") and self.challenger is not None:
            return self.challenger
        return self.policy

    # -- windows ----------------------------------------------------------------------------

    def attribute(self, session: Session, events: Sequence[Event]) -> dict[str, str]:
        """Attribute newly stored events to decisions; {event id: decision id} for those that were.

        An event naming its decision (`decision_id`) is attributed to it if that decision was
        shown to the same person and its window is open at the event's time; the event's reward
        then settles the decision at once (unless it was rewarded already). Any other event is
        attributed to the latest open decision of the person that showed its item or offer, and
        counts when that window closes (`settle_due`).
        """
        rules = self.policy.policy.rewards
        found: dict[str, str] = {}
        for event in events:
            if event.type not in rules.events and event.type is not EventType.purchase:
                continue  # earns nothing and is no conversion: not worth a lookup
            keys = _subject_keys(session, event)
            if event.decision_id is not None:
                window = window_of(session, event.decision_id)
                if (
                    window is None
                    or window.subject_key not in keys
                    or not window.opened_at <= event.ts <= window.closes_at
                ):
                    continue
            else:
                window = latest_window(
                    session, keys, item_id=event.item_id, offer_id=event.offer_id, at=event.ts
                )
                if window is None:
                    continue
            earned = rules.reward_of(event.type.value, event.value)
            session.add(
                Attribution(
                    event_id=event.event_id,
                    decision_id=window.decision_id,
                    type=event.type.value,
                    ts=event.ts,
                    value=event.value,
                    reward=earned,
                    explicit=event.decision_id is not None,
                )
            )
            session.flush()
            found[event.event_id] = window.decision_id
            if event.decision_id is not None and window.offer_id is not None:
                try:
                    with session.begin_nested():
                        self.reward(
                            session,
                            window.decision_id,
                            earned,
                            source="event",
                            event_ids=[event.event_id],
                        )
                except Conflict:
                    pass  # rewarded already (by feedback or an earlier event): once only
        return found

    def settle_due(self, session: Session, now: datetime, *, limit: int = 500) -> Settled:
        """Close up to `limit` windows that have closed by `now`: a decision not rewarded yet
        gets the best reward of the events attributed to it within its window, or the default."""
        rewarded = 0
        windows = due_windows(session, now, limit)
        for window in windows:
            if window.offer_id is not None:
                events = [
                    a
                    for a in attributed(session, window.decision_id)
                    if not a.explicit and a.ts <= window.closes_at
                ]
                events.sort(key=lambda a: (-a.reward, a.ts, a.event_id))
                reward = events[0].reward if events else window.default_reward
                source = "window" if events else "default"
                try:
                    with session.begin_nested():
                        self.reward(
                            session,
                            window.decision_id,
                            reward,
                            source=source,
                            event_ids=[a.event_id for a in events],
                        )
                    rewarded += 1
                except Conflict:
                    pass  # rewarded already: by feedback, an event, or another sweeper
            close_window(session, window.decision_id)
        return Settled(closed=len(windows), rewarded=rewarded)


def _subject_keys(session: Session, event: Event) -> list[str]:
    """The subject keys decisions about the event's person were logged under."""
    keys = []
    if event.user_id is not None:
        keys.append(Subject(event.user_id, None).key)
    if event.anonymous_id is not None:
        keys.append(Subject(None, event.anonymous_id).key)
        subject = resolve_subject(session, None, event.anonymous_id)
        if subject.user_id is not None:
            keys.append(subject.key)
    return list(dict.fromkeys(keys))
