"""`attune.client` against a real server (uvicorn on 127.0.0.1): every operation, sync and async,
the SSE chat iterator, and errors raised as typed exceptions carrying the problem document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from app_server import serve
from fastapi import FastAPI

from agents.services import Services
from api.app import create_app
from attune.client import AsyncAttune, Attune
from attune.errors import AuthError, InvalidRequest, NotFoundError
from attune.models import CopyResult
from store.access import create_key


@pytest.fixture(scope="module")
def app(demo_services: Services) -> FastAPI:
    return create_app(services=lambda: demo_services)


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def attune(base_url: str) -> Iterator[Attune]:
    with Attune(base_url) as client:
        yield client


def test_decide_then_feedback(attune: Attune) -> None:
    decision = attune.decide(channel="web", user_id="u_0160", query="tea")
    assert decision.items and decision.explanation.summary
    assert decision.channel == "web" and decision.decision_id
    if decision.offer is not None:
        assert 0 < decision.offer.propensity <= 1
    feedback = attune.feedback(decision.decision_id, 1)
    assert feedback.decision_id == decision.decision_id and feedback.reward == 1


def test_events_report_each_event(attune: Attune) -> None:
    event = {
        "event_id": "client-ev-1",
        "type": "view",
        "ts": "2026-11-01T10:00:00Z",
        "user_id": "u_0161",
        "item_id": "itm_00001",
    }
    first = attune.events([event, {**event, "event_id": "client-ev-2", "type": "teleport"}])
    assert (first.accepted, first.rejected) == (1, 1)
    assert first.results[1].status == "rejected" and first.results[1].reason
    assert attune.events([event]).duplicates == 1


def test_chat_whole_and_streamed(attune: Attune) -> None:
    whole = attune.chat("Something for tea?", user_id="u_0162")
    assert whole.reply and whole.thread_id
    events = list(
        attune.chat_stream("And for coffee?", user_id="u_0162", thread_id=whole.thread_id)
    )
    assert events[-1].event == "final"
    answer = events[-1].answer
    assert answer is not None and answer.thread_id == whole.thread_id
    assert "".join(e.text for e in events) == answer.reply
    assert any(e.event == "tool" for e in events)


def test_copy_for_a_small_audience(attune: Attune) -> None:
    result = attune.copy(
        {
            "brief": {"goal": "a treat for coffee lovers", "categories": ["coffee_tea"]},
            "channel": "web_banner",
            "audience": {"user_ids": ["u_0163", "u_0164"]},
            "variants": 1,
        }
    )
    assert isinstance(result, CopyResult)
    assert result.segments and result.segments[0]["variants"]


def test_a_user_read_changed_exported_and_erased(attune: Attune) -> None:
    user = attune.user("u_0165")
    assert user.user_id == "u_0165" and "email" in user.profile
    changed = attune.update_user("u_0165", consent={"email": False})
    assert changed.consent["email"] is False
    decision = attune.decide(channel="web", user_id="u_0165")
    exported = attune.export_user("u_0165")
    assert decision.decision_id in json.dumps(exported) and "identity_links" in exported
    erased = attune.erase_user("u_0165")
    assert erased["erased"] is True and erased["removed"]
    with pytest.raises(NotFoundError) as gone:
        attune.user("u_0165")
    assert gone.value.status == 404 and gone.value.problem["status"] == 404


def test_an_invalid_request_raises_with_the_fields_named(attune: Attune) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        attune.decide(channel="web")
    assert invalid.value.status == 422
    assert invalid.value.errors and invalid.value.errors[0]["field"] == "user_id"
    with pytest.raises(InvalidRequest) as bad_channel:
        attune.decide(channel="carrier-pigeon", user_id="u_0160")
    assert [e["field"] for e in bad_channel.value.errors] == ["channel"]
    with pytest.raises(InvalidRequest):
        list(attune.chat_stream("", user_id="u_0160"))


def test_a_refused_key_raises_an_auth_error(app: FastAPI, demo_services: Services, base_url: str):
    secured = replace(
        demo_services, settings=demo_services.settings.model_copy(update={"auth": "keys"})
    )
    with secured.db.session() as session:
        plain, _ = create_key(session, name="client", scopes=["chat"], subject_user_id="u_0166")
    app.state.services = secured
    try:
        with Attune(base_url, api_key=plain) as attune:
            assert attune.chat("tea", user_id="u_0166").reply
            with pytest.raises(AuthError) as refused:
                attune.chat("tea", user_id="u_0167")
            assert refused.value.status == 403 and "u_0166" in refused.value.detail
            with pytest.raises(AuthError):
                list(attune.chat_stream("tea", user_id="u_0167"))
        with Attune(base_url) as anonymous, pytest.raises(AuthError) as missing:
            anonymous.decide(channel="web", user_id="u_0166")
        assert missing.value.status == 401 and missing.value.title == "Unauthorized"
    finally:
        app.state.services = demo_services


def test_the_async_client_does_the_same(base_url: str) -> None:
    async def run() -> None:
        async with AsyncAttune(base_url) as attune:
            decision = await attune.decide(channel="web", user_id="u_0168")
            assert decision.items
            assert (await attune.feedback(decision.decision_id, 0)).reward == 0
            events = [e async for e in attune.chat_stream("tea?", user_id="u_0168")]
            answer = events[-1].answer
            assert answer is not None and "".join(e.text for e in events) == answer.reply
            assert (await attune.user("u_0168")).user_id == "u_0168"
            with pytest.raises(InvalidRequest) as invalid:
                await attune.chat("", user_id="u_0168")
            assert invalid.value.errors[0]["field"] == "message"

    asyncio.run(run())
