"""A decision's reads (issue 14): one connection, one statement for the person, the offers shown
to them and the bandit arms, kept for the request only — the next decision, even right after another worker wrote
an event, a consent or an erasure, reads the store again."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

import store.db
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from policies.engine import PolicyEngine
from retrieval.sequence import person_history
from store.bandit import (
    _OFFER_STATE,
    ArmState,
    OfferStateQuery,
    add_reward,
    read_arms,
    read_offer_state,
)
from store.catalog import catalog_version, get_items, upsert_items
from store.db import Database
from store.decisions import get_decision, log_decision, offer_exposure_times
from store.errors import Conflict, StorageFull
from store.events import ingest_events
from store.features import person_features, read_features
from store.models import PersonSequence
from store.person import _DECISION, read_person
from store.person import _profile as _stored_profile
from store.predictions import Prediction, prediction_for, replace_predictions
from store.prepared import Prepared
from store.schemas import Channel, Event, Item, Profile, Purpose, UserRecord
from store.tombstones import add_tombstones
from store.users import Subject, get_user, link_identity, upsert_user
from tools.offers import LIFECYCLE_SEGMENTS, offer_reads, select_offer
from tools.profile import lookup_profile
from tools.reads import decision_history, open_decision
from tools.schemas import SelectOfferInput

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
# Tables only the person's one statement may read during a decision.
PERSON_TABLES = ("users", "consents", "identity_links", "person_features", "predictions")


def _profile(name: str) -> dict[str, str]:
    return {"first_name": name, "last_name": "Reads", "email": f"{name.lower()}@example.org"}


@pytest.fixture(scope="module")
def other_worker(
    demo_services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """A second service on the demo's database, with its own home, as another worker process
    would be built: what it writes, the demo service must see in its next decision."""
    services = build_services(
        Settings(
            home=tmp_path_factory.mktemp("other-worker"), database_url=demo_services.db.url, seed=7
        )
    )
    with TestClient(create_app(services=lambda: services)) as client:
        yield client
    services.close()


def _person(client: TestClient, user_id: str, *, personalization: bool, views: list[str]) -> None:
    consent = dict.fromkeys([p.value for p in Purpose], True) | {"personalization": personalization}
    answer = client.put(
        f"/v1/users/{user_id}",
        json={"profile": _profile(user_id.title().replace("-", "")), "consent": consent},
    )
    assert answer.status_code == 200, answer.text
    _view(client, user_id, views)


def _view(client: TestClient, user_id: str, items: list[str]) -> None:
    events = [
        {
            "event_id": f"{user_id}-{item}",
            "type": "view",
            "ts": (NOW - timedelta(hours=len(items) - n)).isoformat(),
            "user_id": user_id,
            "item_id": item,
        }
        for n, item in enumerate(items)
    ]
    if events:
        answer = client.post("/v1/events", json={"events": events})
        assert answer.status_code in (200, 202), answer.text


def _recorded(services: Services, user_id: str) -> dict[str, Any]:
    """What a decision about `user_id` made now recorded about them."""
    decision = decide(services, DecideRequest(channel=Channel.web, user_id=user_id), now=NOW)
    with services.db.session() as session:
        return get_decision(session, decision.decision_id).record["features"]


def test_two_decisions_in_a_row_read_each_persons_own_data(
    demo_services: Services, other_worker: TestClient
) -> None:
    _person(other_worker, "reads-ann", personalization=True, views=["itm_00001", "itm_00002"])
    _person(other_worker, "reads-bob", personalization=False, views=[])
    ann = _recorded(demo_services, "reads-ann")
    bob = _recorded(demo_services, "reads-bob")
    assert (ann["user_id"], ann["event_count"], ann["personalized"]) == ("reads-ann", 2, True)
    assert ann["recent_item_ids"] == ["itm_00002", "itm_00001"]
    assert (bob["user_id"], bob["event_count"], bob["personalized"]) == ("reads-bob", 0, False)
    assert bob["consent"]["personalization"] is False and bob["recent_item_ids"] == []
    assert _recorded(demo_services, "reads-ann") == ann


def test_the_next_decision_sees_what_another_worker_wrote(
    demo_services: Services, other_worker: TestClient
) -> None:
    _person(other_worker, "reads-cat", personalization=True, views=["itm_00003"])
    before = _recorded(demo_services, "reads-cat")
    assert (before["known"], before["event_count"], before["personalized"]) == (True, 1, True)

    _view(other_worker, "reads-cat", ["itm_00004"])
    after_event = _recorded(demo_services, "reads-cat")
    assert after_event["event_count"] == 2 and after_event["recent_item_ids"][0] == "itm_00004"

    answer = other_worker.put("/v1/users/reads-cat", json={"consent": {"personalization": False}})
    assert answer.status_code == 200, answer.text
    after_consent = _recorded(demo_services, "reads-cat")
    assert after_consent["consent"]["personalization"] is False
    assert after_consent["personalized"] is False

    assert other_worker.delete("/v1/users/reads-cat").status_code == 200
    after_erasure = _recorded(demo_services, "reads-cat")
    assert (after_erasure["known"], after_erasure["event_count"]) == (False, 0)
    assert after_erasure["recent_item_ids"] == [] and not any(after_erasure["consent"].values())


def test_a_decision_reads_the_person_and_the_offer_state_in_one_statement(
    demo_services: Services,
) -> None:
    """A count bound, so a change that adds reads to a decision fails here: the person, their
    history row, the offers shown to them and the bandit arms in one statement, on one
    connection (two statements on two connections before)."""
    request = DecideRequest(channel=Channel.web, user_id="u_0007")
    decide(demo_services, request, now=NOW)  # warm
    statements, checkouts = _counted(demo_services, lambda: decide(demo_services, request, now=NOW))
    selects = [s for s in statements if s.startswith("select")]
    # The one statement that opens the decision reads the person, the item-item re-ranking's
    # maintained row of their history (`store.sequences`, none of their events), the offers
    # shown to them and the bandit arms.
    (opened,) = [s for s in selects if "catalog_version" in s]
    tables = (*PERSON_TABLES, "person_sequences", "decisions", "bandit_arms")
    assert all(f" {t} " in f"{opened} " for t in tables), opened
    assert not any(re.search(r"events\.item_id( as item_id)?, events\.type", s) for s in selects)
    assert not any(" from person_sequences " in f"{s} " for s in selects), selects
    # The catalog's version comes with the person: popularity reads it no more.
    assert not any(s.startswith("select catalog_version") for s in selects), selects
    # At most one more from retrieval (titles of the history items its reasons name that no
    # hit carries); the log's writes are not reads.
    assert len(selects) <= 2, selects
    # One connection for the reads that open the decision, one for the log, and at most one
    # for the titles.
    assert checkouts[0] <= 3, checkouts


def test_a_new_visitors_decision_reads_once_and_sees_another_workers_hide(
    demo_services: Services, other_worker: TestClient
) -> None:
    """Popularity, kept per catalog version, is checked against the version the decision read
    with the person: no statement of its own once kept (the decision's one SELECT is the
    person's, with the offer state), and an item another worker hid is gone from the next
    decision."""
    request = DecideRequest(channel=Channel.web, anonymous_id="reads-new-visitor")
    shown = [c.item_id for c in decide(demo_services, request, now=NOW).items]
    statements, checkouts = _counted(demo_services, lambda: decide(demo_services, request, now=NOW))
    selects = [s for s in statements if s.startswith("select")]
    assert len(selects) == 1 and checkouts[0] == 2, (selects, checkouts)  # the reads; the log
    top = shown[0]
    assert other_worker.post(f"/v1/catalog/items/{top}/hide").status_code == 200
    try:
        after = [c.item_id for c in decide(demo_services, request, now=NOW).items]
        assert top not in after and after[0] == shown[1], (shown, after)
    finally:
        assert other_worker.post(f"/v1/catalog/items/{top}/unhide").status_code == 200
    assert [c.item_id for c in decide(demo_services, request, now=NOW).items] == shown


def test_a_lifecycle_policys_arms_are_read_with_the_person(demo_services: Services) -> None:
    """The person's lifecycle stage is known only once they are read, so a policy that keeps
    its arms per stage has them read in every stage with the person: choosing an offer then
    reads nothing more."""
    policy = demo_services.tools.policy.policy.model_copy(update={"bandit_segment": "lifecycle"})
    deps = replace(
        demo_services.tools,
        policy=PolicyEngine(policy),
        shadow_policy=None,
        challenger_policy=None,
    )
    query = offer_reads(deps, Channel.web, NOW)
    assert {segment for _, segment in query.states} == set(LIFECYCLE_SEGMENTS)
    ctx = open_decision(deps, "u_0007", None, channel=Channel.web, now=NOW)
    offer_ids = [o.offer_id for o in deps.offers.current()][:3]
    chosen: list[Any] = []
    statements, checkouts = _counted(
        demo_services,
        lambda: chosen.append(select_offer(ctx, SelectOfferInput(offer_ids=offer_ids))),
    )
    assert (statements, checkouts) == ([], [0])
    assert chosen[0].segment == lookup_profile(ctx).segment in LIFECYCLE_SEGMENTS


def test_the_app_bandit_reads_its_observations_in_one_statement_and_no_transaction(
    demo_services: Services,
) -> None:
    """Between two rewards, the app's linear bandit reads what is new of its observations
    (`store.linear.ObservationCache`) in one statement compiled once, on one connection and
    in no transaction: no session, no ORM query."""
    offer_ids = [o.offer_id for o in demo_services.tools.offers.current()][:3]
    chosen: list[Any] = []
    for user_id in ("u_0007", "u_0008", "u_0009", "u_0010"):
        ctx = open_decision(demo_services.tools, user_id, None, channel=Channel.app, now=NOW)
        select_offer(ctx, SelectOfferInput(offer_ids=offer_ids))  # the cache has read all rows
        begun: list[object] = []
        began = begun.append
        event.listen(demo_services.db.engine, "begin", began)
        try:
            statements, checkouts = _counted(
                demo_services,
                lambda c=ctx: chosen.append(select_offer(c, SelectOfferInput(offer_ids=offer_ids))),
            )
        finally:
            event.remove(demo_services.db.engine, "begin", began)
        if chosen[-1].policy.startswith("lints@"):  # not a holdout's uniform draw
            break
    assert chosen[-1].policy.startswith("lints@"), chosen[-1]
    assert len(statements) == 1 and " from linear_observations " in statements[0], statements
    assert (checkouts, begun) == ([1], [])


def _counted(services: Services, work: Any) -> tuple[list[str], list[int]]:
    """The statements `work()` ran on the service's database and its connection checkouts."""
    statements: list[str] = []
    checkouts = [0]

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    def checkout(*_: Any) -> None:
        checkouts[0] += 1

    event.listen(services.db.engine, "before_cursor_execute", seen)
    event.listen(services.db.engine.pool, "checkout", checkout)
    try:
        work()
    finally:
        event.remove(services.db.engine, "before_cursor_execute", seen)
        event.remove(services.db.engine.pool, "checkout", checkout)
    return statements, checkouts


def test_a_user_id_with_someone_elses_anonymous_id_is_a_conflict(demo_services: Services) -> None:
    with demo_services.db.session() as session:
        link_identity(session, "anonymous", "reads-anon-of-u1", "u_0001")
    with pytest.raises(Conflict, match="anonymous_id"):
        open_decision(
            demo_services.tools, "u_0002", "reads-anon-of-u1", channel=Channel.web, now=NOW
        )
    bound = open_decision(
        demo_services.tools, None, "reads-anon-of-u1", channel=Channel.web, now=NOW
    )
    assert bound.subject == Subject("u_0001", "reads-anon-of-u1")


def test_read_person_agrees_with_the_store_functions(database_url: str) -> None:
    """On each dialect: the one statement resolves the subject as `resolve_subject` does and
    reads what `get_user`, `read_features` and `prediction_for` read."""
    db = Database(database_url)
    record = UserRecord.model_validate(
        {"user_id": "p1", "profile": _profile("Pat"), "consent": {"personalization": True}}
    )
    with db.session() as session:
        upsert_user(session, record)
        link_identity(session, "anonymous", "a-linked", "p1")
        ingest_events(
            session,
            [
                Event.model_validate(
                    {
                        "event_id": f"e{n}",
                        "type": "view",
                        "ts": NOW - timedelta(hours=n),
                        "item_id": f"i{n}",
                        **who,
                    }
                )
                for n, who in enumerate(
                    [{"user_id": "p1"}, {"anonymous_id": "a-linked"}, {"anonymous_id": "a-free"}]
                )
            ],
        )
        replace_predictions(session, {"p1": Prediction(0.25, {"wine": 0.5}, "v1")}, computed_at=NOW)
    try:
        with db.session() as session:
            for user_id, anonymous_id, subject in [
                ("p1", None, Subject("p1", None)),
                (None, "a-linked", Subject("p1", "a-linked")),
                ("p1", "a-linked", Subject("p1", "a-linked")),
                (None, "a-free", Subject(None, "a-free")),
                ("nobody", None, Subject("nobody", None)),
            ]:
                person = read_person(session, user_id, anonymous_id)
                assert person.subject == subject
                assert person.record == (
                    get_user(session, "p1") if subject.user_id == "p1" else None
                )
                assert person.prediction == (
                    prediction_for(session, "p1") if subject.user_id == "p1" else None
                )

                assert person_features(session, person, as_of=NOW) == read_features(
                    session, subject, as_of=NOW
                )
            assert read_person(session, "p2", "a-linked").owner == "p1"
            # The history row of the key the feature row has, read along when asked.
            for user_id, anonymous_id in [("p1", None), (None, "a-linked"), (None, "a-free")]:
                person = read_person(session, user_id, anonymous_id, history=True)
                stored = session.get(PersonSequence, person.key)
                assert stored is not None and person.history == stored.state
                assert not read_person(session, user_id, anonymous_id).history_read
            assert read_person(session, "nobody", None, history=True).history is None
            upsert_items(session, [Item(item_id="i0", title="Mug", price=5.0)])
            assert read_person(session, "p1", None).catalog_version == catalog_version(session) > 0
            assert get_items(session, ["i0", "missing"]) == {
                "i0": Item(item_id="i0", title="Mug", price=5.0)
            }
            add_reward(session, "thompson", "web", "o1", 1.0, (1.0, 1.0))
            log_decision(
                session,
                decision_id="d1",
                subject_key="user:p1",
                user_id="p1",
                channel="web",
                segment="web",
                offer_id="o1",
                created_at=NOW - timedelta(hours=1),
                record={},
            )
            since, states = NOW - timedelta(days=1), [("thompson", "web"), ("thompson", "app")]
            shown, arms = read_offer_state(session, "user:p1", since, states, ["o1", "o2"])
            assert shown == offer_exposure_times(session, "user:p1", since)
            assert shown == [("o1", "web", NOW - timedelta(hours=1))]
            assert (
                arms
                == read_arms(session, states, ["o1", "o2"])
                == {("thompson", "web"): {"o1": ArmState("o1", 2.0, 1.0, 1)}}
            )
            # The same, read with the person in their one statement, whichever id resolves them.
            offers = OfferStateQuery(since, tuple(states), ("o1", "o2"))
            for user_id, anonymous_id in [("p1", None), (None, "a-linked"), ("p1", "a-linked")]:
                person = read_person(session, user_id, anonymous_id, offers)
                assert person.subject.user_id == "p1" and person.record == get_user(session, "p1")
                assert (person.shown, person.arms) == (shown, arms)
            assert read_person(session, None, "a-free", offers).shown == []
            assert read_person(session, "p1", None, offers).arms == arms
            only_arms = OfferStateQuery(None, (("thompson", "web"),), ("o1",))
            assert read_person(session, "p1", None, only_arms).shown == []
            assert read_person(session, "p1", None, only_arms).arms == arms
            # Whether the anonymous id's tombstone key is stored, in every shape of the read.
            add_tombstones(session, ["anon#erased"])
            shapes: list[dict[str, Any]] = [
                {"history": history, "offers": query}
                for history in (False, True)
                for query in (None, offers, only_arms)
            ]
            for shape in shapes:
                for ref, erased in (("anon#erased", True), ("anon#other", False)):
                    person = read_person(session, "p1", "a-linked", erased_ref=ref, **shape)
                    assert person.erased is erased, (shape, ref)
                    # The person's other columns, and the offer state's rows, read as before.
                    assert person.record == get_user(session, "p1")
                    assert person.subject == Subject("p1", "a-linked")
                    assert person.history_read is shape["history"]
                    if shape["history"]:
                        assert person.history == session.get(PersonSequence, "user:p1").state
                    if shape["offers"] is not None:
                        assert person.arms == arms
                        assert person.shown == ([] if shape["offers"] is only_arms else shown)
                    visitor = read_person(session, None, "a-free", erased_ref=ref, **shape)
                    assert visitor.erased is erased and visitor.subject == Subject(None, "a-free")
            # Each statement's IN lists have a parameter each, so SQLAlchemy compiles it once
            # and does not render it again on every execution as it does an `expanding` list.
            for statement in [*(p.statement for p in _DECISION.values()), *_OFFER_STATE.values()]:
                assert not statement.compile(db.engine).post_compile_params
            consent = read_person(session, "p1", None).consent
            assert consent[Purpose.personalization] and not consent[Purpose.email]
    finally:
        db.dispose()


def test_a_persons_history_is_read_by_index_ranges_not_sorted_whole(
    demo_services: Services,
) -> None:
    """The history read must not grow with the person's history: its user and anonymous-id
    branches are each an index range in time order cut at the limit (`ix_events_*_recent`), so
    SQLite never sorts all of a person's events. Without the indexes, or with a single `OR`,
    the plan sorts the person's events and this fails."""
    from retrieval.sequence import _HISTORY

    statement = _HISTORY[True, True]
    engine = demo_services.db.engine
    assert engine.dialect.name == "sqlite"  # the demo services' store; the plan is SQLite's
    compiled = statement.compile(engine)
    values = compiled.construct_params({"user_id": "u_0007", "anonymous_id": "a-1", "limit": 50})
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        plan = [
            row[3]
            for row in raw.execute(
                f"EXPLAIN QUERY PLAN {compiled}", [values[k] for k in compiled.positiontup or []]
            )
        ]
    assert any("USING INDEX ix_events_user_recent" in step for step in plan), plan
    assert any("USING INDEX ix_events_anonymous_recent" in step for step in plan), plan
    # One sort for the linked anonymous ids' branch (an IN list) and one for the merged rows
    # (at most three times the limit); none for the user's or the anonymous id's own events.
    assert sum("TEMP B-TREE FOR ORDER BY" in step for step in plan) <= 2, plan


def test_a_decisions_history_is_the_persons_history(
    demo_services: Services, other_worker: TestClient
) -> None:
    """The history the re-ranking reads, from the row read with the person when the decision
    opened, is `person_history`'s, whoever the request names: a user with a row (no statement
    then), one whose row was dropped by a new link (their events), an anonymous visitor, one
    linked to a user, both ids at once, someone with no history."""
    assert demo_services.tools.itemitem is not None  # else no decision reads the history
    _person(other_worker, "reads-dan", personalization=True, views=["itm_00005", "itm_00006"])
    _view(other_worker, "reads-dan", ["itm_00007"])
    with demo_services.db.session() as session:
        link_identity(session, "anonymous", "reads-dan-anon", "reads-dan")  # drops his row
    answer = other_worker.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": f"reads-eve-{item}",
                    "type": "view",
                    "ts": NOW.isoformat(),
                    "anonymous_id": "reads-eve",
                    "item_id": item,
                }
                for item in ("itm_00008", "itm_00009")
            ]
        },
    )
    assert answer.status_code in (200, 202), answer.text
    for user_id, anonymous_id, read_along in [
        ("u_0007", None, True),
        ("reads-dan", None, False),
        (None, "reads-dan-anon", False),
        ("reads-dan", "reads-dan-anon", False),
        (None, "reads-eve", True),
        ("reads-nobody", None, False),
    ]:
        ctx = open_decision(
            demo_services.tools, user_id, anonymous_id, channel=Channel.web, now=NOW
        )
        got: list[Any] = []
        statements, checkouts = _counted(
            demo_services, lambda c=ctx, out=got: out.append(decision_history(c))
        )
        subject = ctx.subject
        expected = person_history(demo_services.db, subject.user_id, subject.anonymous_id)
        assert got[0] == expected, (user_id, anonymous_id)
        if read_along:
            assert expected and (statements, checkouts) == ([], [0]), (user_id, anonymous_id)
        else:
            assert not any(" from person_sequences " in f"{s} " for s in statements), statements


def test_the_decisions_read_keeps_the_engines_hooks(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On each dialect: the decision's read and its window's INSERT run on the DBAPI cursor
    (`Prepared.fetch`, `Prepared.send`), below SQLAlchemy's execution, and the engine's hooks
    still see them: the statement listeners, and, for a driver error, the error handling: a
    full storage is `StorageFull`, any other error SQLAlchemy's `DBAPIError` (which
    `Database.transaction` retries on when it may)."""
    db = Database(database_url)
    seen: list[str] = []
    after: list[str] = []
    errors: list[BaseException] = []

    def before_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        after.append(statement)

    def failed(context: Any) -> None:
        errors.append(context.original_exception)

    event.listen(db.engine, "before_cursor_execute", before_execute)
    event.listen(db.engine, "after_cursor_execute", after_execute)
    event.listen(db.engine, "handle_error", failed)
    try:
        with db.connect() as connection:
            person = read_person(connection, "nobody", None, history=True)
        assert person.record is None and person.history is None
        assert len(seen) == 1 and "catalog_version" in seen[0] and after == seen
        missing = sa.table("no_such_table", sa.column("x"))
        read, write = Prepared(sa.select(missing)), Prepared(sa.insert(missing), ["x"])
        with pytest.raises(DBAPIError) as raised, db.connect() as connection:
            read.fetch(connection, {})
        assert len(errors) == 1 and raised.value.orig is errors[0]
        with pytest.raises(DBAPIError) as raised, db.connect() as connection:
            write.send(connection, {"x": 1})
        assert len(errors) == 2 and raised.value.orig is errors[1]
        assert len(seen) == 3 and "insert into no_such_table" in seen[2].lower()
        monkeypatch.setattr(store.db, "is_storage_full", lambda error: True)
        for run in (lambda c: read.fetch(c, {}), lambda c: write.send(c, {"x": 1})):
            with pytest.raises(StorageFull), db.connect() as connection:
                run(connection)
        problem = db.storage_problem()
        assert problem is not None and "full" in problem
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "profile",
    [
        _profile("Ann"),
        _profile("Bo") | {"phone": "+44 20 7946 0000", "birth_date": "1990-02-28", "locale": "fr"},
        _profile("Cy")
        | {
            "birth_date": "1970-12-31",
            "address": {"street": "1 Main St", "city": "Leeds", "postcode": "LS1", "country": "GB"},
        },
    ],
)
def test_a_stored_profile_is_read_as_validated(profile: dict[str, Any]) -> None:
    """The person's profile is built from the row without validating it again, and equals
    what validating it gives: fields, their types, nested address, fields set."""
    stored = Profile.model_validate(profile).model_dump(mode="json")  # as `upsert_user` writes
    read, validated = _stored_profile(stored), Profile.model_validate(stored)
    assert read == validated and repr(read) == repr(validated)
    assert read.model_fields_set == validated.model_fields_set
    assert read.model_dump() == validated.model_dump()
    if validated.address is not None:
        assert read.address is not None
        assert read.address.model_fields_set == validated.address.model_fields_set
    # A row of another shape (a field missing) is parsed as before, and refused alike.
    partial = {k: v for k, v in stored.items() if k != "locale"}
    assert _stored_profile(partial) == Profile.model_validate(partial)
    with pytest.raises(ValidationError):
        _stored_profile({k: v for k, v in stored.items() if k != "first_name"})


def test_refusing_erased_people_needs_the_anonymous_ids_tombstone_key(
    demo_services: Services,
) -> None:
    """A caller that asks for the erased to be refused and sends an anonymous id must give its
    tombstone key: without it the check would pass every visitor."""

    def refuse(*_: Any) -> None:
        raise AssertionError("not reached")

    for user_id in (None, "u_0001"):
        with pytest.raises(ValueError, match="erased_ref"):
            open_decision(
                demo_services.tools, user_id, "a-visitor", channel=Channel.web, now=NOW,
                refuse=refuse,
            )  # fmt: skip
