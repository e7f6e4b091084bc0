"""Stateful properties: a hypothesis state machine drives the API as several people and an admin.

Keys bound to three people and one unbound admin key post events (with their own and other
people's anonymous ids), decide, chat, give feedback, change consent, export, erase and restart
the service (sometimes with the vector index folder deleted, as an operator might). After every
step the machine checks README's promises:

- no caller reads or changes another person's data: a bound key gets 403 on anyone else, and no
  body it receives holds another person's ids or profile values;
- an erased person never reappears anywhere under ATTUNE_HOME (every byte of every file:
  databases, write-ahead logs, checkpoints, models), even after a restart; the audit log names
  the erasure by keyed hash only;
- a consent withdrawal holds, also across restarts;
- no acknowledged event is lost unless its person was erased.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from at_rest import file_bytes
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from small_world import write_small_world
from sqlalchemy import select

from agents.factory import build_services
from agents.privacy.rights import subject_ref
from agents.reindex import start
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.access import create_key
from store.models import AuditEntry

pytestmark = pytest.mark.fuzz

PEOPLE = ("u_0101", "u_0102", "u_0103")  # ids no other demo id extends (u_0001..u_0240)
ADMIN = "admin"
CHANNELS = ("web", "app", "email", "push")
PURPOSES = ("personalization", "profiling", "llm_processing", "email", "push")
FRESH_ANONS = tuple(f"anon_sm_{n}" for n in range(4))
ITEMS = ("itm_00001", "itm_00002", "itm_00003")


@dataclass
class Person:
    user_id: str
    headers: dict[str, str]
    profile_values: list[str]  # the PII another caller must never see
    consent: dict[str, bool]
    erased: bool = False


@dataclass
class World:
    """What the model believes the service holds."""

    people: dict[str, Person] = field(default_factory=dict)
    anon_owner: dict[str, str | None] = field(default_factory=dict)  # None: not linked yet
    retired_anons: set[str] = field(default_factory=set)  # of erased people: never reused
    events: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # id: user, anon
    decisions: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    rewarded: set[str] = field(default_factory=set)
    threads: dict[str, str] = field(default_factory=dict)  # thread id: owner
    counter: int = 0

    def owner_of_event(self, user: str | None, anon: str | None) -> str | None:
        return user if user is not None else self.anon_owner.get(anon or "")

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter:05d}"


def _mentions(text: str, token: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", text) is not None


class APIMachine(RuleBasedStateMachine):
    decisions = Bundle("decisions")

    # Set by the test: where each run's home is made, and the world `attune serve` loads.
    make_home: Any = None
    world_folder: Path = Path()

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(self.make_home())
        self.settings = Settings(home=self.home, seed=7, auth="keys", rate_limit_per_minute=10**6)
        self.services: Services = build_services(self.settings)
        start(self.services, self.world_folder)
        self.client = self._client()
        self.world = World()
        self.read_index = False

    # ----------------------------------------------------------------- setup and teardown

    def _client(self) -> TestClient:
        client = TestClient(create_app(services=lambda: self.services))
        client.__enter__()
        return client

    def teardown(self) -> None:
        self.client.__exit__(None, None, None)
        self.services.close()
        shutil.rmtree(self.home, ignore_errors=True)

    @initialize()
    def setup_people(self) -> None:
        with self.services.db.session() as session:
            admin, _ = create_key(
                session,
                name="sm-admin",
                scopes=["admin", "decide", "chat", "copy", "events", "eval"],
            )
            self.admin = {"Authorization": f"Bearer {admin}"}
            for user_id in PEOPLE:
                plain, _ = create_key(
                    session,
                    name=f"sm-{user_id}",
                    scopes=["decide", "chat", "events"],
                    subject_user_id=user_id,
                )
                self.world.people[user_id] = Person(
                    user_id, {"Authorization": f"Bearer {plain}"}, [], {}
                )
        for user_id, person in self.world.people.items():
            export = self._ok(self.client.get(f"/v1/users/{user_id}/export", headers=self.admin))
            profile = export["profile"]
            person.profile_values = [v for k, v in profile.items() if k in ("email", "phone") and v]
            person.consent = dict(export["consent"])
            for anon in export["identity_links"]["anonymous"]:
                self.world.anon_owner[anon] = user_id
            for event in export["events"]:
                self.world.events[event["event_id"]] = (user_id, event["anonymous_id"])
        for anon in FRESH_ANONS:
            self.world.anon_owner[anon] = None

    # ------------------------------------------------------------------------- helpers

    def _ok(self, response: Any) -> Any:
        assert response.status_code == 200, (response.request.url, response.text)
        return response.json()

    def _living(self) -> list[str]:
        return [u for u, p in self.world.people.items() if not p.erased]

    def _caller(self, who: str) -> dict[str, str]:
        return self.admin if who == ADMIN else self.world.people[who].headers

    def _expect_denied(self, who: str, response: Any) -> None:
        """A bound key of an erased person was erased with them: 401; a live one: 403."""
        erased = who != ADMIN and self.world.people[who].erased
        assert response.status_code == (401 if erased else 403), response.text

    def _check_no_foreign_data(self, who: str, body: str) -> None:
        """A bound caller sees nothing of anyone else: not their ids, anonymous ids, PII."""
        if who == ADMIN:
            return
        for other, person in self.world.people.items():
            if other == who:
                continue
            tokens = [other, *person.profile_values]
            tokens += [a for a, owner in self.world.anon_owner.items() if owner == other]
            for token in tokens:
                assert not _mentions(body, token), f"{who} was shown {other}'s {token!r}"

    def _anon_for(self, data: st.DataObject) -> str:
        pool = sorted(a for a in self.world.anon_owner if a not in self.world.retired_anons)
        return data.draw(st.sampled_from(pool), label="anonymous_id")

    # --------------------------------------------------------------------------- rules

    @rule(data=st.data(), kind=st.sampled_from(["view", "click", "add_to_cart", "purchase"]))
    def post_event(self, data: st.DataObject, kind: str) -> None:
        """A bound key posts an event for its user, sometimes with someone else's anonymous id
        (an attempt to take over their history), sometimes naming another user outright."""
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        subject = data.draw(st.sampled_from([*PEOPLE, None]), label="user_id")
        if who == ADMIN and subject is not None and self.world.people[subject].erased:
            subject = None  # the admin does not recreate the erased through events
        anon = self._anon_for(data) if data.draw(st.booleans(), label="with anon") else None
        if subject is None and anon is None:
            anon = self._anon_for(data)
        if (
            who == ADMIN
            and subject is not None
            and self.world.anon_owner.get(anon or "")
            not in (
                None,
                subject,
            )
        ):
            anon = None  # what an admin may merge is a policy of its own, not checked here
        event_id = self.world.next_id("sm_evt")
        event = {
            "event_id": event_id,
            "type": kind,
            "ts": "2026-11-02T10:00:00Z",
            "user_id": subject,
            "anonymous_id": anon,
            "item_id": data.draw(st.sampled_from(ITEMS), label="item"),
        }
        if kind == "purchase":
            event["value"] = 10.0
        response = self.client.post(
            "/v1/events", json={"events": [event]}, headers=self._caller(who)
        )
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
            return
        result = self._ok(response)["results"][0]
        owner = self.world.anon_owner.get(anon) if anon else None
        foreign_user = who != ADMIN and subject != who
        foreign_anon = anon is not None and owner is not None and owner != subject
        if foreign_user:
            assert result["status"] == "rejected", result
        if who != ADMIN and foreign_anon:
            # Linking another person's anonymous id to oneself is taking over their history.
            assert result["status"] == "rejected", result
        if result["status"] != "accepted":
            assert result["status"] == "rejected", result
            return
        if anon is not None and subject is not None and owner is None:
            self.world.anon_owner[anon] = subject
        self.world.events[event_id] = (subject, anon)
        self._check_no_foreign_data(who, response.text)

    @precondition(
        lambda self: any(
            owner is not None and a not in self.world.retired_anons
            for a, owner in self.world.anon_owner.items()
        )
    )
    @rule(data=st.data())
    def take_over_anonymous_id(self, data: st.DataObject) -> None:
        """A bound key claims an anonymous id linked to someone else: it must be refused."""
        owned = sorted(
            (a, owner)
            for a, owner in self.world.anon_owner.items()
            if owner is not None and a not in self.world.retired_anons
        )
        anon, owner = data.draw(st.sampled_from(owned), label="victim's anonymous id")
        thieves = [u for u in self._living() if u != owner]
        if not thieves:
            return
        thief = data.draw(st.sampled_from(thieves), label="thief")
        event = {
            "event_id": self.world.next_id("sm_evt"),
            "type": "view",
            "ts": "2026-11-02T11:00:00Z",
            "user_id": thief,
            "anonymous_id": anon,
            "item_id": ITEMS[0],
        }
        response = self.client.post(
            "/v1/events", json={"events": [event]}, headers=self._caller(thief)
        )
        result = self._ok(response)["results"][0]
        assert result["status"] == "rejected", f"{thief} took over {owner}'s {anon}: {result}"

    @rule(target=decisions, data=st.data(), channel=st.sampled_from(CHANNELS))
    def decide(self, data: st.DataObject, channel: str) -> Any:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        if data.draw(st.booleans(), label="anonymous"):
            body: dict[str, Any] = {"anonymous_id": self._anon_for(data)}
            subject: tuple[str | None, str | None] = (None, body["anonymous_id"])
        else:
            # The admin never names the erased: that would be new data about them, not a
            # resurrection. A bound key may name anyone: it must be refused first.
            users = PEOPLE if who != ADMIN else self._living()
            user = data.draw(st.sampled_from(users), label="user_id")
            body, subject = {"user_id": user}, (user, None)
        body |= {"channel": channel, "query": "something for the kitchen", "k": 3}
        response = self.client.post("/v1/decide", json=body, headers=self._caller(who))
        if who != ADMIN and subject[0] != who:
            self._expect_denied(who, response)
            return multiple()
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
            return multiple()
        decision = self._ok(response)
        self._check_no_foreign_data(who, response.text)
        consented = subject[0] is not None and self.world.people[subject[0]].consent.get("email")
        if channel == "email" and not consented:
            assert not decision["content"], "email copy without email consent"
        self.world.decisions[decision["decision_id"]] = subject
        return decision["decision_id"]

    @rule(decision_id=decisions, data=st.data(), reward=st.sampled_from([0.0, 1.0]))
    def feedback(self, decision_id: str, data: st.DataObject, reward: float) -> None:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        response = self.client.post(
            "/v1/feedback",
            json={"decision_id": decision_id, "reward": reward},
            headers=self._caller(who),
        )
        owner = self._decision_owner(decision_id)
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
        elif decision_id not in self.world.decisions:  # erased with its person
            assert response.status_code in (403, 404), response.text
        elif who != ADMIN and owner != who:
            self._expect_denied(who, response)
        elif decision_id in self.world.rewarded:
            assert response.status_code == 409, response.text
        else:
            self._ok(response)
            self.world.rewarded.add(decision_id)

    @rule(decision_id=decisions, data=st.data())
    def read_decision(self, decision_id: str, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        response = self.client.get(f"/v1/decisions/{decision_id}", headers=self._caller(who))
        owner = self._decision_owner(decision_id)
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
        elif decision_id not in self.world.decisions:
            assert response.status_code in (403, 404), response.text
        elif who != ADMIN and owner != who:
            self._expect_denied(who, response)
        else:
            self._ok(response)
            self._check_no_foreign_data(who, response.text)

    @rule(data=st.data())
    def chat(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        user = data.draw(st.sampled_from(PEOPLE if who != ADMIN else self._living()), label="user")
        body: dict[str, Any] = {
            "user_id": user,
            "message": "I need a present for a coffee lover",
            "stream": False,
        }
        thread_owner = None
        if self.world.threads and data.draw(st.booleans(), label="continue a thread"):
            thread = data.draw(st.sampled_from(sorted(self.world.threads)), label="thread")
            body["thread_id"], thread_owner = thread, self.world.threads[thread]
        response = self.client.post("/v1/chat", json=body, headers=self._caller(who))
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
            return
        if who != ADMIN and user != who:
            self._expect_denied(who, response)
            return
        if thread_owner is not None and thread_owner != user:
            # Thread ids are kept per subject: another person's id starts a thread of one's own
            # (200) or is refused; either way nothing of the other person comes back.
            assert response.status_code in (200, 403, 404), response.text
            self._check_no_foreign_data(who, response.text)
            return
        answer = self._ok(response)
        self._check_no_foreign_data(who, response.text)
        if "thread_id" in answer:
            self.world.threads[answer["thread_id"]] = user

    @rule(data=st.data(), purpose=st.sampled_from(PURPOSES), granted=st.booleans())
    def set_consent(self, data: st.DataObject, purpose: str, granted: bool) -> None:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        user = data.draw(st.sampled_from(PEOPLE), label="user_id")
        response = self.client.put(
            f"/v1/users/{user}", json={"consent": {purpose: granted}}, headers=self._caller(who)
        )
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
        elif who != ADMIN and user != who:
            self._expect_denied(who, response)
        elif self.world.people[user].erased:
            # README: erasure is final; writing to an erased person is refused for every caller.
            assert response.status_code == 409, response.text
            assert "erased" in response.json()["detail"]
        else:
            self.world.people[user].consent[purpose] = granted
            assert self._ok(response)["consent"][purpose] is granted
            self._check_no_foreign_data(who, response.text)

    @rule(data=st.data())
    def export(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from([*PEOPLE, ADMIN]), label="caller")
        user = data.draw(st.sampled_from(PEOPLE), label="user_id")
        response = self.client.get(f"/v1/users/{user}/export", headers=self._caller(who))
        if who != ADMIN and self.world.people[who].erased:
            assert response.status_code == 401, response.text
        elif who != ADMIN and user != who:
            self._expect_denied(who, response)
        elif self.world.people[user].erased:
            assert response.status_code == 404, response.text
        else:
            exported = self._ok(response)
            self._check_no_foreign_data(who, response.text)
            self._check_export(user, exported)

    @precondition(lambda self: len(self._living()) > 1)
    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self._living()), label="user_id")
        who = data.draw(st.sampled_from([user, ADMIN]), label="caller")
        response = self.client.delete(f"/v1/users/{user}", headers=self._caller(who))
        self._ok(response)
        self.world.people[user].erased = True
        self.read_index = True
        for anon, owner in self.world.anon_owner.items():
            if owner == user:
                self.world.retired_anons.add(anon)
        for decision_id, (subject, anon) in list(self.world.decisions.items()):
            if self.world.owner_of_event(subject, anon) == user:
                del self.world.decisions[decision_id]
        with self.services.db.session() as session:
            targets = session.scalars(
                select(AuditEntry.target).where(AuditEntry.action == "user.erase")
            ).all()
        assert subject_ref(self.services, user) in targets

    @rule(drop_index=st.booleans())
    def restart(self, drop_index: bool) -> None:
        """Stop the service and start it again as `attune serve` does, on the same home."""
        self.client.__exit__(None, None, None)
        self.services.close()
        if drop_index:
            shutil.rmtree(self.home / "qdrant-edge", ignore_errors=True)
        self.services = build_services(self.settings)
        start(self.services, self.world_folder)  # what the default `attune serve` does
        self.client = self._client()
        self.read_index = True

    # ---------------------------------------------------------------------- invariants

    def _decision_owner(self, decision_id: str) -> str | None:
        """The user a bound key must be to read or reward it; None for an anonymous subject's
        decision, which no bound key acts for."""
        return self.world.decisions.get(decision_id, (None, None))[0]

    def _check_export(self, user: str, exported: dict[str, Any]) -> None:
        held = {e["event_id"] for e in exported["events"]}
        mine = {
            event_id
            for event_id, (u, anon) in self.world.events.items()
            if self.world.owner_of_event(u, anon) == user
        }
        assert mine <= held, f"acknowledged events of {user} lost: {sorted(mine - held)[:5]}"
        assert exported["consent"] == {
            **exported["consent"],
            **self.world.people[user].consent,
        }, "consent differs from what was last set"

    @invariant()
    def acknowledged_events_are_kept(self) -> None:
        if not hasattr(self, "admin"):
            return
        kept = {
            event_id
            for event_id, (user, anon) in self.world.events.items()
            if not self._erased(self.world.owner_of_event(user, anon))
        }
        with self.services.db.engine.connect() as connection:
            stored = {
                row[0]
                for row in connection.exec_driver_sql("SELECT event_id FROM events").fetchall()
            }
        assert kept <= stored, f"acknowledged events lost: {sorted(kept - stored)[:5]}"

    @invariant()
    def consent_holds(self) -> None:
        if not hasattr(self, "admin"):
            return
        for user in self._living():
            shown = self._ok(self.client.get(f"/v1/users/{user}", headers=self.admin))["consent"]
            for purpose, granted in self.world.people[user].consent.items():
                assert shown.get(purpose) is granted, f"{user}'s consent to {purpose} changed"

    @invariant()
    def the_erased_stay_erased(self) -> None:
        if not hasattr(self, "admin"):
            return
        erased = [p for p in self.world.people.values() if p.erased]
        if not erased:
            return
        for person in erased:
            assert (
                self.client.get(f"/v1/users/{person.user_id}", headers=self.admin).status_code
                == 404
            ), f"{person.user_id} is back after erasure"
        tokens = {p.user_id.encode(): p.user_id for p in erased} | {
            a.encode(): a for a in self.world.retired_anons
        }
        for person in erased:
            tokens |= {v.encode(): v for v in person.profile_values}
        # The vector index (hundreds of MB, items only) is read after erasures and restarts.
        index = self.home / "qdrant-edge"
        for path in sorted(self.home.rglob("*")):
            if not path.is_file() or path.name == "audit.key":
                continue
            if not self.read_index and path.is_relative_to(index):
                continue
            content = file_bytes(path)
            for token, text in tokens.items():
                assert token not in content, (
                    f"erased {text!r} found in {path.relative_to(self.home)}"
                )

    def _erased(self, user: str | None) -> bool:
        return user is not None and self.world.people[user].erased


@pytest.fixture
def machine(
    tmp_path_factory: pytest.TempPathFactory, pii_guard: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[type[APIMachine]]:
    """The machine, on a slice of the demo world. The PII guard (seconds to build, no state of
    its own) is built once and shared by every start and restart of the service."""
    monkeypatch.setattr("agents.factory.PIIGuard", lambda **_: pii_guard)
    monkeypatch.setattr(
        APIMachine, "make_home", staticmethod(lambda: tmp_path_factory.mktemp("sm-home"))
    )
    monkeypatch.setattr(
        APIMachine, "world_folder", write_small_world(tmp_path_factory.mktemp("sm-world"))
    )
    yield APIMachine


def test_api_state_machine(machine: type[APIMachine]) -> None:
    machine.TestCase.settings = settings(
        max_examples=int(os.environ.get("ATTUNE_STATEFUL_EXAMPLES", "10")),
        stateful_step_count=15,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        # Shrinking a failing run replays it with restarts hundreds of times (over five minutes
        # on a busy machine); the unshrunk run of at most 15 steps is a readable repro already.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    machine.TestCase().runTest()
