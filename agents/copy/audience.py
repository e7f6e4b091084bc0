"""The audience scan for marketer copy: which people are in each segment, consent first.

Segments are rules or explicit user ids (`agents.copy.segments`). The scan reads people a page
at a time, a few queries per page (`store.cohort`), and evaluates every segment on each page, so
an audience of any number of segments costs one pass over the users.

Consent is checked before a person's data is used, with the policy's own rules:
- personalization consent (the `personalization` consent rule) for anyone;
- the channel's consent: the `content` consent rule of the channel's offer channel (no email
  copy without email consent) and the channel's purpose (`email`, `push`);
- profiling consent for a rule over behavioural features: without it no features are computed
  for the person, so they are in no such segment (an age or locale rule still applies).
SMS and web banners need no purpose beyond personalization: the store has no SMS purpose yet.

Nothing a member told us (name, email, phone, address) leaves the scan: a segment is summed up
as its size, its youngest member's age, its locales and the purposes everyone in it granted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from agents.copy.segments import Member, Segment
from policies.copy import ChannelSpec
from policies.engine import Facts, PolicyEngine
from policies.rules import ConsentRule
from store.cohort import PAGE, PersonFacts, features_for, people, user_id_page
from store.db import Database
from store.events import Features
from store.models import User
from store.schemas import Purpose
from tools.profile import lifecycle_segment


@dataclass
class SegmentAudience:
    """A segment after the scan: who is in it, summed up without naming anyone."""

    name: str
    size: int = 0
    youngest: int | None = None  # the youngest member's age, among those with a known age
    unknown_age: int = 0  # members without a birth date
    locales: Counter[str] = field(default_factory=Counter)
    granted: Counter[str] = field(default_factory=Counter)  # purpose → members who granted it
    excluded: Counter[str] = field(default_factory=Counter)  # rule id → people it left out
    unknown_ids: int = 0  # explicit user ids that are no user
    members: list[str] = field(default_factory=list)  # only when a scan collects them

    def add(self, person: PersonFacts, age: int | None) -> None:
        self.size += 1
        if age is None:
            self.unknown_age += 1
        else:
            self.youngest = age if self.youngest is None else min(self.youngest, age)
        self.locales[person.locale or ""] += 1
        self.granted.update(p.value for p, ok in person.consent.items() if ok)

    @property
    def age_for_rules(self) -> int | None:
        """The age the segment's items and offers must suit: its youngest member's, or unknown
        (treated as under age by the age gate) when anyone's age is unknown."""
        return None if self.unknown_age else self.youngest

    def consent(self) -> dict[Purpose, bool]:
        """The purposes every member granted."""
        return {p: self.size > 0 and self.granted[p.value] == self.size for p in Purpose}

    def facts(self, spec: ChannelSpec, now: datetime) -> list[Facts]:
        """Facts for the policy, one per locale in the segment: what is allowed must be allowed
        for all of them."""
        locales = sorted(self.locales) or [""]
        return [
            Facts(
                age=self.age_for_rules,
                consent=self.consent(),
                channel=spec.offer_channel,
                now=now,
                locale=locale or None,
            )
            for locale in locales
        ]


Scanned = Callable[[int], None]


def audience_size(db: Database, segments: Sequence[Segment]) -> int:
    """How many people a scan reads: every user when a segment is a rule, else the ids named."""
    if any(s.rule is not None for s in segments):
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(User)) or 0
    return len({u for s in segments for u in s.user_ids or ()})


def scan_audience(
    db: Database,
    policy: PolicyEngine,
    segments: Sequence[Segment],
    spec: ChannelSpec,
    *,
    now: datetime,
    only: Sequence[str] | None = None,
    on_scanned: Scanned | None = None,
    page_size: int = PAGE,
    collect: bool = False,
) -> dict[str, SegmentAudience]:
    """Every segment's members among all users (or among `only`), one pass, page by page.

    `on_scanned(n)` is called after each page with the number of people it read. With
    `collect`, each segment also lists its members' user ids (for a send list, never for copy).
    """
    found = {s.name: SegmentAudience(s.name) for s in segments}
    explicit = {s.name: set(s.user_ids) for s in segments if s.user_ids is not None}
    seen = Counter[str]()
    need_features = any(s.rule is not None and s.rule.uses_features for s in segments)
    for page in _pages(db, segments, only, page_size):
        with db.session() as session:
            facts = people(session, page)
            gates = {uid: _gate(policy, spec, person, now) for uid, person in facts.items()}
            wanted = [
                uid for uid, (left_out, profiling) in gates.items() if not (left_out or profiling)
            ]
            features = features_for(session, wanted, as_of=now) if need_features else {}
        for uid in page:
            person = facts.get(uid)
            if person is None:
                continue
            left_out, profiling = gates[uid]
            age = person.age_on(now.date())
            member: Member | None = None
            for segment in segments:
                audience = found[segment.name]
                if segment.user_ids is not None:
                    if uid not in explicit[segment.name]:
                        continue
                    seen[segment.name] += 1
                reason = left_out
                if reason is None and segment.rule is not None and segment.rule.uses_features:
                    reason = profiling
                if reason is not None:
                    audience.excluded[reason] += 1
                    continue
                if segment.rule is not None:
                    if member is None:
                        person_features = features.get(uid) or Features(as_of=now)
                        member = Member(
                            features=person_features,
                            lifecycle=lifecycle_segment(person_features),
                            age=age,
                            locale=person.locale,
                        )
                    if not segment.rule.matches(member):
                        continue
                audience.add(person, age)
                if collect:
                    audience.members.append(uid)
        if on_scanned is not None:
            on_scanned(len(page))
    for name, ids in explicit.items():
        wanted_ids = ids if only is None else ids & set(only)
        found[name].unknown_ids = len(wanted_ids) - seen[name]
    return found


def _pages(
    db: Database, segments: Sequence[Segment], only: Sequence[str] | None, size: int
) -> Iterator[list[str]]:
    if only is not None:
        ids = sorted(set(only))
    elif any(s.rule is not None for s in segments):
        after = ""
        while True:
            with db.session() as session:
                page = user_id_page(session, after=after, size=size)
            if not page:
                return
            yield page
            after = page[-1]
    else:
        ids = sorted({u for s in segments for u in s.user_ids or ()})
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _gate(
    policy: PolicyEngine, spec: ChannelSpec, person: PersonFacts, now: datetime
) -> tuple[str | None, str | None]:
    """(the consent rule that leaves the person out of any copy on this channel, the consent
    rule that keeps their features out of feature rules), each None when it does not apply."""
    facts = Facts(age=None, consent=person.consent, channel=spec.offer_channel, now=now)
    personalized, firings = policy.personalization(facts)
    left_out: str | None = None
    if not personalized:
        left_out = firings[0].rule_id
    elif (blocked := policy.blocked("content", facts)) is not None:
        left_out = blocked.rule_id
    elif spec.consent is not None and not person.consent.get(spec.consent, False):
        left_out = consent_rule_id(policy, spec)
    profiling = policy.blocked("profiling", facts)
    return left_out, profiling.rule_id if profiling else None


def consent_rule_id(policy: PolicyEngine, spec: ChannelSpec) -> str:
    """The policy's consent rule for the channel's purpose, or a fixed id when it has none."""
    assert spec.consent is not None
    for rule in policy.policy.of_type(ConsentRule):
        if rule.purpose == spec.consent and (
            not rule.channels or spec.offer_channel in rule.channels
        ):
            return rule.id
    return f"copy-consent-{spec.consent.value}"
