"""A decision's reads, made once: the subject bound, and what the tools will ask of the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection

from retrieval.sequence import person_history, recent_history, stored_person_history
from store.errors import Conflict
from store.person import read_person
from store.schemas import Channel
from store.sequences import subject_key
from store.users import LINKED_ELSEWHERE
from tools.context import RunContext, ToolDeps
from tools.offers import keep_offer_reads, offer_reads
from tools.profile import settle_profile


def open_decision(
    deps: ToolDeps,
    user_id: str | None,
    anonymous_id: str | None,
    *,
    channel: Channel,
    now: datetime,
    refuse: Callable[[Connection, str | None, str | None], None] | None = None,
    erased_ref: str | None = None,
) -> RunContext:
    """The context of one decision about (`user_id`, `anonymous_id`), bound as
    `store.users.resolve_subject` binds it, with what its tools read already in its memo.

    One Core connection (no ORM session, no transaction: `Database.reading`) and one
    statement, built once per process for each shape of what it reads
    (`store.person.read_person`, run on the DBAPI cursor: `store.prepared`): the person (who
    they are, profile, consent, feature row, prediction, and, when the re-ranking is trained,
    their history row: `decision_history`) with the catalog's version, the offers shown to
    them within the frequency caps and the bandit arms of the current offers in their segment
    (`tools.offers.offer_reads`, known before the person is read). The memo belongs to this
    context, so nothing read here outlives the request: the next decision reads the store
    again and sees every write made since, by any worker — the catalog's version too, against
    which the popularity cache (`store.catalog.PopularCache`) is checked. A user id sent with
    an anonymous id linked to someone else is a Conflict, as in `resolve_subject`.

    `refuse(connection, user_id, anonymous_id)` is called for a user id with no user stored,
    and for an anonymous id the same SELECT found a tombstone for (`erased_ref`, the id's
    tombstone key, which a caller passing `refuse` with an anonymous id must give), sent alone
    or beside a user id, before anything is written about them (the first read stores their
    feature row), and raises to refuse the decision: an erased person (`agents.decide.run`).
    A stored user, or an anonymous id never erased, costs it no statement. Every anonymous id
    is checked, not only a visitor's without a feature row: before session 23 a decision about
    an erased visitor stored one.
    """
    if refuse is not None and anonymous_id is not None and not erased_ref:
        raise ValueError("refusing erased anonymous ids needs their tombstone key (erased_ref)")
    offers = offer_reads(deps, channel, now)
    with deps.db.reading() as connection:
        person = read_person(
            connection,
            user_id,
            anonymous_id,
            offers,
            history=deps.itemitem is not None,
            erased_ref=erased_ref,
        )
        if user_id is not None and person.owner not in (None, user_id):
            raise Conflict(LINKED_ELSEWHERE)
        unknown_user = user_id is not None and person.record is None
        if refuse is not None and (person.erased or unknown_user):
            refuse(connection, user_id, anonymous_id)
        ctx = RunContext(deps=deps, subject=person.subject, channel=channel, now=now)
        ctx.memo["catalog_version"] = person.catalog_version
        settle_profile(ctx, connection, person)
    keep_offer_reads(ctx, offers, person)
    if person.history_read:
        ctx.memo["history"] = (person.key, person.history)
    return ctx


def decision_history(ctx: RunContext) -> list[tuple[str, float]]:
    """`retrieval.sequence.person_history` of the decision's subject, from the history row read
    when the decision opened when it is the one `person_history` reads (no statement), and
    from their events when that row holds none (none yet, or of another version); read as
    `person_history` reads it when it was not read."""
    subject = ctx.subject
    key, state = ctx.memo.get("history", (None, None))
    if key is None or key != subject_key(subject.user_id, subject.anonymous_id):
        return person_history(ctx.deps.db, subject.user_id, subject.anonymous_id)
    history = stored_person_history(state)
    if history is not None:
        return history
    with ctx.deps.db.reading() as connection:
        return recent_history(connection, subject.user_id, subject.anonymous_id)
