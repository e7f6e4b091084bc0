"""The OpenAI-compatible writer seam, through real HTTP to a scripted server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fake_openai import FakeOpenAI, Reply, fake_openai

from agents.decide.run import DecideRequest, decide
from agents.factory import build_writer
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from agents.writing.llm_writer import OpenAIWriter
from agents.writing.writer import money
from store.decisions import get_decision
from store.schemas import Channel

# A user of this module only: other modules' decisions would change its frequency caps.
USER = json.loads((PROJECT_ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines()[9])


def _brief(body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(body["messages"][1]["content"])


def good_draft(body: dict[str, Any]) -> str:
    brief = _brief(body)
    item = brief["items"][0]
    text = f"Hi {brief['greeting_name']}, the {item['title']} is yours for "
    text += money(item["price"], item["currency"]) + "."
    return json.dumps({"text": text, "item_ids": [item["item_id"]], "offer_id": None})


def invented_price(body: dict[str, Any]) -> str:
    item = _brief(body)["items"][0]
    text = f"The {item['title']} now only €0.99!"
    return json.dumps({"text": text, "item_ids": [item["item_id"]]})


@pytest.fixture
def with_model(demo_services: Services) -> Iterator[Callable[[list[Reply]], FakeOpenAI]]:
    """Swap the service's writer for one talking to a fake server, for one test."""
    original = demo_services.writer
    with ExitStack() as stack:

        def install(script: list[Reply]) -> FakeOpenAI:
            server = stack.enter_context(fake_openai(script))
            demo_services.writer = OpenAIWriter(
                base_url=server.base_url, api_key="test", model="fake-model", timeout_s=0.5
            )
            return server

        try:
            yield install
        finally:
            demo_services.writer = original


def _decide(services: Services, query: str | None = None):
    request = DecideRequest(channel=Channel.web, user_id=USER["user_id"], query=query)
    decision = decide(services, request)
    with services.db.session() as session:
        record = get_decision(session, decision.decision_id).record
    return decision, record


def test_settings_choose_the_openai_writer() -> None:
    assert build_writer(Settings()).name == "offline"
    configured = Settings(openai_base_url="http://127.0.0.1:9/v1", openai_model="m")
    assert isinstance(build_writer(configured), OpenAIWriter)
    with pytest.raises(ValueError, match="ATTUNE_OPENAI_MODEL"):
        Settings(openai_base_url="http://127.0.0.1:9/v1")


def test_a_grounded_model_draft_is_used(with_model, demo_services: Services) -> None:
    server = with_model([Reply(content=good_draft)])
    profile = USER["profile"]
    decision, record = _decide(
        demo_services, query=f"I am {profile['first_name']}, mail {profile['email']}: a teapot?"
    )
    assert len(server.requests) == 1
    assert record["content"]["writer"] == "openai"
    assert record["versions"]["prompt"] == "decide-copy-1"
    # The person sees their first name; the model and the log only ever saw a placeholder.
    assert decision.content.startswith(f"Hi {profile['first_name']},")
    assert "<FIRST_NAME_1>" in record["content"]["text"]
    sent = json.dumps(server.requests)
    for value in (profile["first_name"], profile["last_name"], profile["email"]):
        assert value not in sent
    assert not any(reason.startswith("writer") for reason in decision.degraded)


def test_an_ungrounded_draft_is_retried_then_replaced(with_model, demo_services: Services) -> None:
    server = with_model([Reply(content=invented_price)])
    decision, record = _decide(demo_services)
    assert len(server.requests) == 2
    assert "rejected" in server.requests[1]["messages"][-1]["content"]
    assert record["content"]["writer"] == "offline"
    assert "0.99" not in decision.content
    assert any("output guard rejected" in reason for reason in decision.degraded)


def test_a_retry_that_fixes_the_draft_is_accepted(with_model, demo_services: Services) -> None:
    server = with_model([Reply(content=invented_price), Reply(content=good_draft)])
    decision, record = _decide(demo_services)
    assert len(server.requests) == 2
    assert record["content"]["writer"] == "openai"
    assert record["content"]["attempts"] == 2
    assert not any(reason.startswith("writer") for reason in decision.degraded)


@pytest.mark.parametrize(
    "reply", [Reply(status=500), Reply(content="not json"), Reply(content=good_draft, delay_s=1.0)]
)
def test_a_failing_model_falls_back_to_the_offline_writer(
    with_model, demo_services: Services, reply: Reply
) -> None:
    with_model([reply])
    decision, record = _decide(demo_services)
    assert record["content"]["writer"] == "offline"
    assert decision.content
    assert any(reason.startswith("writer: openai failed") for reason in decision.degraded)
