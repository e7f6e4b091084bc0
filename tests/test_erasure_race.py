"""A person erased while a decision about them is being made is not stored again.

A decision reads the person, runs its graph, then logs its record. An erasure can commit in
between: from a worker thread beside the event loop, from another process, and above all while
an LLM writer drafts the copy, for seconds. The record would then name the erased person after
their erasure, with nothing left to remove it. Here the erasure is made to happen at those
moments, on SQLite and on PostgreSQL: from inside the scripted model's reply (the decision or
chat turn is waiting for its draft), and while a write is under way (the erasure's transaction
open when a decision reaches its INSERT, or a batch of events or a profile write its tombstone
check).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from erasing import while_erasing
from fake_openai import Reply, fake_openai
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, or_, select

from agents.chat.turn import ChatRequest, chat_turn
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.llm.client import LLMClient
from agents.llm.retry import RetryPolicy
from agents.privacy.rights import erase_user
from agents.privacy.sweep import sweep_erased
from agents.seed import seed
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from agents.writing.llm_writer import OpenAIWriter
from api.app import create_app
from store import erasure, features
from store.errors import Conflict
from store.features import forget_features
from store.models import (
    DecisionRow,
    EventRow,
    IdentityLink,
    Maintenance,
    PersonFeatures,
    RewardWindow,
    Tombstone,
    User,
)
from store.schemas import Channel

DEMO = PROJECT_ROOT / "data" / "demo"
USERS = 12  # the first users of the demo, with their events on the first ITEMS items
ITEMS = 200


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("race-world")
    users = _jsonl(DEMO / "users.jsonl")[:USERS]
    items = _jsonl(DEMO / "items.jsonl")[:ITEMS]
    known = {i["item_id"] for i in items}
    ids = {u["user_id"] for u in users}
    events = [
        e for e in _jsonl(DEMO / "events.jsonl") if e["item_id"] in known and e["user_id"] in ids
    ]
    for name, rows in (("users", users), ("items", items), ("events", events)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(DEMO / "offers.jsonl", folder / "offers.jsonl")
    return folder


@pytest.fixture
def services(
    database_url: str, tiny_model_dir: Path, world: Path, tmp_path: Path
) -> Iterator[Services]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=database_url,
        embedding_model=str(tiny_model_dir),
        seed=7,
    )
    built = build_services(settings)
    seed(built, world)
    yield built
    built.close()


def _people(services: Services, world: Path) -> list[tuple[str, list[str]]]:
    """The users whose consent lets a model write their copy, each with the anonymous ids
    linked to them, those with links first."""
    writable = [
        u["user_id"]
        for u in _jsonl(world / "users.jsonl")
        if u["consent"]["llm_processing"] and u["consent"]["personalization"]
    ]
    with services.db.session() as session:
        links = session.execute(
            select(IdentityLink.user_id, IdentityLink.external_id).where(
                IdentityLink.kind == "anonymous"
            )
        ).all()
    linked = {u: sorted(a for owner, a in links if owner == u) for u in writable}
    return sorted(linked.items(), key=lambda person: not person[1])


def _tombstones(services: Services) -> int:
    """How many identifiers were erased (a table that erasure's VACUUM FULL does not lock)."""
    with services.db.session() as session:
        return session.scalar(select(func.count()).select_from(Tombstone)) or 0


def _stored_about(services: Services, user_id: str) -> tuple[int, int]:
    """(decisions, attribution windows) held about the user."""
    with services.db.session() as session:
        decisions = session.scalar(
            select(func.count())
            .select_from(DecisionRow)
            .where(
                or_(DecisionRow.user_id == user_id, DecisionRow.subject_key == f"user:{user_id}")
            )
        )
        windows = session.scalar(
            select(func.count())
            .select_from(RewardWindow)
            .where(RewardWindow.subject_key == f"user:{user_id}")
        )
    return decisions or 0, windows or 0


@contextmanager
def erased_while_drafting(services: Services, user_id: str) -> Iterator[list[dict[str, Any]]]:
    """The service's writer is a scripted model whose first reply erases `user_id` before it
    answers (the decision has read the person, and waits for its draft); yields the erasures
    made (what `erase_user` returned)."""
    erasures: list[dict[str, Any]] = []

    def erase_then_draft(body: dict[str, Any]) -> str:
        if not erasures:
            erasures.append(erase_user(services, user_id, actor="test"))
        item = json.loads(body["messages"][1]["content"])["items"][0]
        return json.dumps({"text": f"The {item['title']}.", "item_ids": [item["item_id"]]})

    original = services.writer
    with fake_openai([Reply(content=erase_then_draft)]) as server:
        services.writer = OpenAIWriter(
            base_url=server.base_url, api_key="test", model="fake-model", timeout_s=5
        )
        try:
            yield erasures
        finally:
            services.writer = original


def test_a_person_erased_while_the_model_drafts_their_copy_is_not_logged(
    services: Services, world: Path
) -> None:
    (user_id, anonymous), (bystander, _) = _people(services, world)[:2]
    assert anonymous, "the world has a user with a linked anonymous id"
    with erased_while_drafting(services, user_id) as erasures:
        # Sent as the person's anonymous id alone: the decision is about its owner.
        with pytest.raises(Conflict, match="erased while the decision was being made"):
            decide(services, DecideRequest(channel=Channel.web, anonymous_id=anonymous[0]))
        assert erasures, "the model was asked while the decision held the person"
        assert _stored_about(services, user_id) == (0, 0)
        # Anyone else is answered and logged as before.
        decide(services, DecideRequest(channel=Channel.web, user_id=bystander))
        assert _stored_about(services, bystander) == (1, 1)


def test_over_http_the_decision_is_a_409_and_the_person_stays_erased(
    services: Services, world: Path
) -> None:
    (user_id, _), *_ = _people(services, world)
    with (
        erased_while_drafting(services, user_id) as erasures,
        TestClient(create_app(services=lambda: services)) as client,
    ):
        answer = client.post("/v1/decide", json={"channel": "web", "user_id": user_id})
        assert answer.status_code == 409, answer.text
        assert "erased while the decision was being made" in answer.json()["detail"]
        assert erasures and _stored_about(services, user_id) == (0, 0)
        again = client.post("/v1/decide", json={"channel": "web", "user_id": user_id})
        assert again.status_code == 409, again.text


def deciding_about(
    services: Services, user_id: str, outcome: list[BaseException | str]
) -> threading.Thread:
    """A thread (not started) that makes a decision about the user and appends to `outcome`
    "logged", or the error it raised."""

    def decide_about_them() -> None:
        try:
            decide(services, DecideRequest(channel=Channel.web, user_id=user_id))
            outcome.append("logged")
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    return threading.Thread(target=decide_about_them)


def test_a_decision_written_while_the_erasure_commits_waits_and_is_refused(
    services: Services, world: Path
) -> None:
    # The erasure's transaction is open, its rows deleted and tombstones added, when the
    # decision (which read the person before) comes to log its record. On PostgreSQL the
    # decision's INSERT would not see the uncommitted tombstones, and the erasure's DELETE had
    # not seen the decision: the erasure's lock on the decision log makes the INSERT wait.
    (user_id, anonymous), *_ = _people(services, world)
    outcome: list[BaseException | str] = []

    deciding = deciding_about(services, user_id, outcome)
    while_erasing(services, user_id, anonymous, deciding)
    assert not deciding.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert _stored_about(services, user_id) == (0, 0)


@contextmanager
def chat_erasing(services: Services, user_id: str) -> Iterator[tuple[Services, list[Any]]]:
    """The services with a scripted chat model whose first reply erases `user_id` before it
    answers; yields them and the erasures made."""
    erasures: list[Any] = []

    def erase_then_answer(body: dict[str, Any]) -> str:
        if not erasures:
            erasures.append(erase_user(services, user_id, actor="test"))
        return "Here are a few ideas."

    with fake_openai([Reply(content=erase_then_answer)]) as server:
        llm = LLMClient(
            base_url=server.base_url,
            api_key="test",
            model="fake-model",
            retry=RetryPolicy(max_retries=0, base_s=0.01, cap_s=0.02),
        )
        yield replace(services, llm=llm), erasures


def test_a_person_erased_during_their_chat_turn_is_not_logged(
    services: Services, world: Path
) -> None:
    (user_id, _), *_ = _people(services, world)
    with (
        chat_erasing(services, user_id) as (chatty, erasures),
        pytest.raises(Conflict, match="erased while the decision was being made"),
    ):
        chat_turn(chatty, ChatRequest(message="something for the kitchen", user_id=user_id))
    assert erasures, "the model was asked while the turn held the person"
    assert _stored_about(services, user_id) == (0, 0)
    # Nor was the turn's thread kept (chat memory is checkpointed when a turn completes).
    assert sum(erase([f"user:{user_id}"]) for erase in services.erasers) == 0


def test_a_streamed_turn_whose_person_is_erased_ends_in_a_conflict_event(
    services: Services, world: Path
) -> None:
    # The stream is answered 200 before the turn runs; the refusal comes as its last event,
    # as the 409 it would have been (it came as an internal error, logged as a crash).
    (user_id, _), *_ = _people(services, world)
    body = {"message": "something for the kitchen", "user_id": user_id}
    with (
        chat_erasing(services, user_id) as (chatty, erasures),
        TestClient(create_app(services=lambda: chatty)) as client,
    ):
        streamed = client.post("/v1/chat", json=body)
    assert erasures and streamed.status_code == 200, streamed.text
    lines = streamed.text.splitlines()
    last = lines.index("event: error")
    error = json.loads(lines[last + 1].removeprefix("data: "))
    assert (error["title"], error["status"]) == ("Conflict", 409), error
    assert error["detail"].startswith("this person was erased while the decision was being made")
    assert _stored_about(services, user_id) == (0, 0)


def test_events_sent_while_the_erasure_commits_wait_and_are_refused(
    services: Services, world: Path
) -> None:
    # As above, for a batch of events: its tombstones are read in the transaction that stores
    # it, after the lock an erasure holds. Before, they were read in a transaction of their own
    # first, and an erasure committing in between let the batch store the person again.
    (user_id, anonymous), *_ = _people(services, world)
    item_id = _jsonl(world / "items.jsonl")[0]["item_id"]
    batch = {
        "events": [
            {
                "event_id": f"race-{kind}",
                "type": "view",
                "ts": "2026-11-30T12:00:00Z",
                "item_id": item_id,
                **ids,
            }
            for kind, ids in (
                ("user", {"user_id": user_id}),
                ("visitor", {"anonymous_id": anonymous[0]}),
                ("other", {"anonymous_id": "anon_never_erased"}),
            )
        ]
    }
    answers: list[Any] = []
    with TestClient(create_app(services=lambda: services)) as client:
        sending = threading.Thread(
            target=lambda: answers.append(client.post("/v1/events", json=batch))
        )
        while_erasing(services, user_id, anonymous, sending)
    assert answers and answers[0].status_code == 200, answers
    statuses = [(r["status"], r.get("reason") or "") for r in answers[0].json()["results"]]
    assert statuses[0][0] == "rejected" and statuses[0][1].startswith("user_id: this person")
    assert statuses[1][0] == "rejected" and statuses[1][1].startswith("anonymous_id: it belonged")
    assert statuses[2] == ("accepted", "")
    with services.db.session() as session:
        stored = session.scalars(
            select(EventRow.event_id).where(EventRow.event_id.like("race-%"))
        ).all()
    assert stored == ["race-other"]


def test_a_profile_written_while_the_erasure_commits_waits_and_is_refused(
    services: Services, world: Path
) -> None:
    # A profile write read the tombstone, then upserted the user: an erasure committing in
    # between was overwritten, the person stored again under the erased id.
    (user_id, anonymous), *_ = _people(services, world)
    answers: list[Any] = []
    with TestClient(create_app(services=lambda: services)) as client:
        profile = {"first_name": "Again", "last_name": "Here", "email": "again@example.org"}
        body = {"profile": profile, "consent": {"personalization": True}}
        writing = threading.Thread(
            target=lambda: answers.append(client.put(f"/v1/users/{user_id}", json=body))
        )
        while_erasing(services, user_id, anonymous, writing)
    assert answers and answers[0].status_code == 409, answers[0].text if answers else None
    assert "was erased and cannot be created again" in answers[0].json()["detail"]
    with services.db.session() as session:
        assert session.get(User, user_id) is None


def test_the_sweep_of_what_older_code_stored_runs_on_both_databases(
    services: Services, world: Path
) -> None:
    # The whole sweep is tested in tests/test_restart.py; here, its statements on each database.
    (user_id, anonymous), (bystander, _) = _people(services, world)[:2]
    erase_user(services, user_id, actor="test")
    item_id = _jsonl(world / "items.jsonl")[0]["item_id"]
    with services.db.session() as session:
        for n, (user, visitor) in enumerate(
            [(user_id, None), (None, anonymous[0]), (bystander, None)]
        ):
            session.add(
                EventRow(
                    event_id=f"old-{n}", type="view", ts=datetime.now(UTC), item_id=item_id,
                    user_id=user, anonymous_id=visitor,
                )
            )  # fmt: skip
        session.execute(delete(Maintenance))  # as in a database from before the sweep
    swept = sweep_erased(services)
    assert swept is not None and (swept["users"], swept["anonymous_ids"]) == (1, 1), swept
    with services.db.session() as session:
        left = session.scalars(select(EventRow.event_id).where(EventRow.event_id.like("old-%")))
        assert left.all() == ["old-2"]
    assert sweep_erased(services) is None


def test_a_decision_logged_while_the_erasure_lists_their_decisions_is_erased_too(
    services: Services, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite the driver begins a transaction at its first write: an erasure's reads before
    # its first DELETE (who is linked to the person, which decisions are theirs) ran outside it,
    # and a decision logged in between was in no list, and stayed. The erasure now takes the
    # write lock before it reads: the decision waits for it, then is refused.
    (user_id, _), *_ = _people(services, world)
    listed, go = threading.Event(), threading.Event()
    original = erasure.delete_for_decisions

    def pause_then_delete(session: Any, decision_ids: list[str]) -> None:
        listed.set()  # the erasure has read the person's decisions
        go.wait(timeout=30)
        original(session, decision_ids)

    monkeypatch.setattr(erasure, "delete_for_decisions", pause_then_delete)
    outcome: list[BaseException | str] = []

    erasing = threading.Thread(target=erase_user, args=(services, user_id), kwargs={"actor": "t"})
    erasing.start()
    try:
        assert listed.wait(timeout=30)
        deciding = deciding_about(services, user_id, outcome)
        deciding.start()
        deciding.join(timeout=3)
        assert deciding.is_alive(), f"the decision did not wait for the erasure: {outcome}"
    finally:
        go.set()
        erasing.join(timeout=30)
    deciding.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert _stored_about(services, user_id) == (0, 0)


def test_a_feature_row_rebuilt_after_the_erasure_read_them_is_removed(
    services: Services, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A decision about someone without a feature row rebuilds it from their events and stores
    # it as it reads them. An erasure committed between the person's read and that write used
    # to leave the row behind (keyed by their id) until the next start's sweep: the decision's
    # INSERT refused the record, but the row was already committed.
    (user_id, _), *_ = _people(services, world)
    key = f"user:{user_id}"
    with services.db.session() as session:
        forget_features(session, [key])
    original = features._rebuilt
    erasing = threading.Thread(target=erase_user, args=(services, user_id), kwargs={"actor": "t"})

    def erase_then_rebuild(session: Any, keys: Any) -> Any:
        if erasing.ident is None:  # not started yet: the first rebuild
            # In a thread of its own: on PostgreSQL, after it commits, the erasure's VACUUM
            # FULL waits for the decision's reads to end, as it would in the service.
            before = _tombstones(services)
            erasing.start()
            deadline = time.monotonic() + 30
            while _tombstones(services) == before and time.monotonic() < deadline:
                time.sleep(0.02)
        return original(session, keys)

    monkeypatch.setattr(features, "_rebuilt", erase_then_rebuild)
    try:
        with pytest.raises(Conflict, match="erased while the decision was being made"):
            decide(services, DecideRequest(channel=Channel.web, user_id=user_id))
    finally:
        if erasing.ident is not None:
            erasing.join(timeout=30)
    assert erasing.ident is not None, "the decision rebuilt the person's feature row"
    with services.db.session() as session:
        left = session.scalar(
            select(func.count())
            .select_from(PersonFeatures)
            .where(PersonFeatures.subject_key == key)
        )
    assert left == 0
    assert _stored_about(services, user_id) == (0, 0)
