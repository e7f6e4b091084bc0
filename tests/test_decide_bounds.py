"""Every decision finishes in a bounded number of graph steps: each channel × consent × subject
kind over HTTP, and the output guard's retries for writers that never pass it (issue 10, #1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langgraph.runtime import Runtime
from langgraph.types import GraphOutput

from agents.decide.graph import MAX_DRAFTS, RECURSION_LIMIT, guard_output
from agents.decide.state import DecideContext
from agents.services import Services
from agents.writing.writer import Brief, Draft, OfflineWriter
from api.app import create_app
from policies.pii import KnownValues, Vault
from store.schemas import Channel, Purpose
from store.users import Subject
from tools.context import RunContext

# The purpose each channel asks consent for, and the consent rules of the demo policy that
# fire when it is missing.
PURPOSE = {
    Channel.web: Purpose.personalization,
    Channel.app: Purpose.personalization,
    Channel.email: Purpose.email,
    Channel.push: Purpose.push,
}
RULES = {
    Channel.web: {"consent-personalization"},
    Channel.app: {"consent-personalization"},
    Channel.email: {"consent-email-copy", "consent-email"},
    Channel.push: {"consent-push"},
}
NO_COPY_RULE = {Channel.email: "consent-email-copy"}  # channels whose copy needs consent
PROFILE = {"first_name": "Ada", "last_name": "Bound", "email": "ada.bound@example.org"}


@dataclass
class CountingGraph:
    """The decide graph, run step by step so that a test can see every node it visited."""

    graph: Any
    visits: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)

    def invoke(
        self, graph_input: Any, config: Any = None, *, version: str = "v1", **kwargs: Any
    ) -> Any:
        self.visits.clear()
        self.limits.append(config["recursion_limit"])
        state = None
        for mode, chunk in self.graph.stream(
            graph_input, config, stream_mode=["updates", "values"], **kwargs
        ):
            if mode == "updates":
                self.visits.extend(chunk)
            else:
                state = chunk
        # The service asks for LangGraph's v2 output (`agents.decide.run`): the state, wrapped.
        return GraphOutput(value=state) if version == "v2" else state


@pytest.fixture(scope="module")
def counted(demo_services: Services) -> CountingGraph:
    return CountingGraph(demo_services.graph)


@pytest.fixture(scope="module")
def client(demo_services: Services, counted: CountingGraph) -> Iterator[TestClient]:
    services = replace(demo_services, graph=counted)
    with TestClient(create_app(services=lambda: services)) as test_client:
        yield test_client


CASES = [
    (channel, subject, consent)
    for channel in Channel
    for subject, consent in (("user", True), ("user", False), ("anonymous", False))
]


@pytest.mark.parametrize(("channel", "subject", "granted"), CASES)
def test_every_channel_consent_and_subject_finishes_in_bounded_steps(
    client: TestClient, counted: CountingGraph, channel: Channel, subject: str, granted: bool
) -> None:
    name = f"bound-{channel.value}-{subject}-{granted}"
    if subject == "user":
        consent = {purpose.value: True for purpose in Purpose}
        consent[PURPOSE[channel].value] = granted
        written = client.put(f"/v1/users/{name}", json={"profile": PROFILE, "consent": consent})
        assert written.status_code == 200, written.text
        body = {"user_id": name, "channel": channel.value}
    else:
        body = {"anonymous_id": f"anon-{name}", "channel": channel.value}

    response = client.post("/v1/decide", json=body)

    assert response.status_code == 200, response.text
    decision = response.json()
    assert counted.limits[-1] == RECURSION_LIMIT
    assert len(counted.visits) <= RECURSION_LIMIT
    assert counted.visits.count("generate") <= MAX_DRAFTS
    assert counted.visits[-1] == "finish"  # explain, then log
    fired = {rule["rule_id"] for rule in decision["explanation"]["rules_fired"]}
    record = client.get(f"/v1/decisions/{decision['decision_id']}").json()
    logged = {rule["rule_id"] for rule in record["record"]["explanation"]["rules_fired"]}
    if granted:
        assert not fired & RULES[channel]
        assert decision["content"], "copy is allowed: some copy is written"
        return
    assert RULES[channel] <= fired and RULES[channel] <= logged
    if channel in NO_COPY_RULE:
        # No copy allowed: one generate step that writes nothing, no guard, no retry.
        assert decision["content"] == ""
        assert record["record"]["content"]["writer"] == "none"
        assert counted.visits.count("generate") == 1
        assert "guard_output" not in counted.visits
        assert NO_COPY_RULE[channel] in fired


class FailingWriter:
    """A model writer whose every draft breaks the output guard (a banned claim, an unknown price)."""

    name = "failing-model"
    prompt_version = "failing-1"

    def __init__(self) -> None:
        self.calls = 0

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        self.calls += 1
        return Draft(text="Guaranteed cure, only $0.01 today!", item_ids=[], offer_id=None)


class FailingOfflineWriter(OfflineWriter):
    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        return Draft(text="Guaranteed cure, only $0.01 today!", item_ids=[], offer_id=None)


def test_writers_that_never_pass_the_guard_end_after_max_drafts(
    demo_services: Services,
) -> None:
    model = FailingWriter()
    counted = CountingGraph(demo_services.graph)
    services = replace(
        demo_services, writer=model, offline_writer=FailingOfflineWriter(), graph=counted
    )
    with TestClient(create_app(services=lambda: services)) as client:
        consent = {purpose.value: True for purpose in Purpose}  # llm_processing: the model writes
        written = client.put(
            "/v1/users/bound-failing", json={"profile": PROFILE, "consent": consent}
        )
        assert written.status_code == 200, written.text
        response = client.post("/v1/decide", json={"user_id": "bound-failing", "channel": "web"})
    assert response.status_code == 200, response.text
    decision = response.json()
    assert counted.visits.count("generate") == MAX_DRAFTS
    assert counted.visits.count("guard_output") == MAX_DRAFTS
    assert model.calls == 2  # the draft and its one retry; the offline writer wrote the third
    assert decision["content"] == ""
    assert any(reason.startswith("content: withheld") for reason in decision["degraded"])


@pytest.mark.parametrize("writer", ["none", "failing-model", "offline"])
def test_guard_output_stops_retrying_for_every_writer(demo_services: Services, writer: str) -> None:
    """Fed a failing draft again and again, the guard asks for at most MAX_DRAFTS drafts."""

    run = RunContext(
        deps=demo_services.tools,
        subject=Subject(None, "anon-guard-loop"),
        channel=Channel.email,
        now=datetime.now(UTC),
    )
    context = DecideContext(demo_services, run, Vault(), KnownValues.empty(), "d-loop")
    runtime = Runtime(context=context)
    brief = Brief(channel=Channel.email, items=[], offer=None, max_length=600)
    state: dict[str, Any] = {
        "brief": brief,
        "draft": Draft(text="Guaranteed cure, only $0.01 today!", item_ids=[], offer_id=None),
        "writer": writer,
    }
    for _ in range(MAX_DRAFTS + 1):
        update = guard_output(state, runtime)  # type: ignore[arg-type]
        state.update(update)
        if not update["retry"]:
            break
    assert state["retry"] is False
    assert state["attempts"] <= MAX_DRAFTS
    assert state["draft"].text == ""
