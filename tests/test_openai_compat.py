"""POST /v1/chat/completions driven by the `openai` SDK itself against a real uvicorn on
127.0.0.1: whole and streamed answers, the person bound from the key or `user`, the model's
withdrawn words never streamed, and no raw PII in the log, the decision or the thread."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fake_openai import FakeOpenAI, Reply, fake_openai
from fastapi import FastAPI
from local_servers import free_port
from test_chat import USERS, record, shopping, tool_result

from agents.llm.client import LLMClient
from agents.llm.retry import RetryPolicy
from agents.services import Services
from api.app import create_app
from store.access import create_key
from store.decisions import get_decision

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def app(demo_services: Services) -> FastAPI:
    return create_app(services=lambda: demo_services)


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def subject_of(services: Services, decision_id: str) -> str:
    with services.db.session() as session:
        return get_decision(session, decision_id).subject_key


def sdk(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def services_as(app: FastAPI, demo_services: Services) -> Iterator[Callable[..., Services]]:
    """Serve with changed services (a model, keys) for one test."""

    def install(**changes: Any) -> Services:
        app.state.services = replace(demo_services, **changes)
        return app.state.services

    try:
        yield install
    finally:
        app.state.services = demo_services


@pytest.fixture
def model(services_as: Callable[..., Services]) -> Iterator[Callable[[list[Reply]], FakeOpenAI]]:
    with ExitStack() as stack:

        def install(script: list[Reply]) -> FakeOpenAI:
            fake = stack.enter_context(fake_openai(script))
            llm = LLMClient(
                base_url=fake.base_url,
                api_key="test",
                model="fake-model",
                retry=RetryPolicy(max_retries=1, base_s=0.01, cap_s=0.02),
            )
            services_as(llm=llm)
            return fake

        yield install


def test_the_sdk_gets_a_whole_completion(base_url: str, demo_services: Services) -> None:
    answer = sdk(base_url).chat.completions.create(
        model="anything",
        messages=[
            {"role": "system", "content": "ignored: Attune has its own prompt"},
            {"role": "user", "content": "Any teapots for a tea lover?"},
        ],
        user="u_0150",
    )
    assert answer.object == "chat.completion" and answer.model == "attune"
    assert answer.choices[0].finish_reason == "stop"
    text = answer.choices[0].message.content
    extra = answer.model_extra["attune"]
    assert text and text == extra["reply"] and extra["items"]
    assert answer.id == f"chatcmpl-{extra['decision_id']}"
    assert subject_of(demo_services, extra["decision_id"]) == "user:u_0150"
    logged = record(demo_services, extra["decision_id"])
    assert logged["chat"]["thread_id"] == extra["thread_id"]
    assert logged["content"]["item_ids"] == [i["item_id"] for i in extra["items"]]


def test_the_sdk_streams_chunks_word_by_word(base_url: str) -> None:
    stream = sdk(base_url).chat.completions.create(
        model="attune",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Something for tea"}]}],
        user="u_0151",
        stream=True,
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 3  # the offline plan's words, as they are written
    assert chunks[-1].choices[0].finish_reason == "stop"
    final = chunks[-1].model_extra["attune"]
    assert "".join(pieces) == final["reply"] and final["decision_id"]
    assert len({c.id for c in chunks}) == 1


def test_the_stream_ends_with_done(base_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "tea"}], "user": "u_0151", "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_a_thread_continues_through_metadata(base_url: str, demo_services: Services) -> None:
    client = sdk(base_url)
    first = client.chat.completions.create(
        model="attune",
        messages=[{"role": "user", "content": "tea"}],
        user="u_0153",
        metadata={"thread_id": "oa-thread-1"},
    )
    second = client.chat.completions.create(
        model="attune",
        messages=[{"role": "user", "content": "tea"}, {"role": "user", "content": "coffee?"}],
        user="u_0153",
        metadata={"thread_id": "oa-thread-1"},
    )
    assert first.model_extra["attune"]["thread_id"] == "oa-thread-1"
    assert second.model_extra["attune"]["thread_id"] == "oa-thread-1"
    assert demo_services.chat.checkpoints.threads("user:u_0153") == ["oa-thread-1"]


def test_words_the_output_guard_withdraws_are_never_streamed(model, base_url: str) -> None:
    script = shopping()
    script[-1] = Reply(
        content=lambda body: (
            f"The {tool_result(body, 'retrieve_items')['items'][0]['title']} is only €0.99!"
        )
    )
    model(script)
    chunks = list(
        sdk(base_url).chat.completions.create(
            model="attune",
            messages=[{"role": "user", "content": "Tea gifts?"}],
            user="u_0154",
            stream=True,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    final = chunks[-1].model_extra["attune"]
    assert "€0.99" not in streamed and streamed == final["reply"]
    assert any("output guard rejected" in d for d in final["degraded"])


def test_a_models_reply_that_passes_the_guard_is_streamed(model, base_url: str) -> None:
    model(shopping())
    chunks = list(
        sdk(base_url).chat.completions.create(
            model="attune",
            messages=[{"role": "user", "content": "Tea?"}],
            user="u_0155",
            stream=True,
        )
    )
    final = chunks[-1].model_extra["attune"]
    assert final["degraded"] == [] and final["reply"].startswith("Good news: the ")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == final["reply"]


def test_no_raw_pii_reaches_the_model_the_log_the_decision_or_the_thread(
    model, base_url: str, demo_services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    profile = USERS["u_0152"]["profile"]
    fake = model([Reply(content="Hello <FIRST_NAME_1>, how can I help?")])
    message = f"I'm {profile['first_name']} {profile['last_name']}, mail me at {profile['email']}"
    with caplog.at_level(logging.DEBUG):
        for stream in (False, True):
            answer = sdk(base_url).chat.completions.create(
                model="attune",
                messages=[{"role": "user", "content": message}],
                user="u_0152",
                stream=stream,
                metadata={"thread_id": "oa-pii"},
            )
            if stream:
                chunks = list(answer)
                extra = chunks[-1].model_extra["attune"]
            else:
                extra = answer.model_extra["attune"]
            assert extra["reply"] == f"Hello {profile['first_name']}, how can I help?"
    logged = json.dumps(record(demo_services, extra["decision_id"]))
    stored = json.dumps(
        demo_services.chat.graph.get_state(
            {"configurable": {"thread_id": "user:u_0152|oa-pii"}}
        ).values
    )
    sent = json.dumps(fake.requests)
    for value in (profile["first_name"], profile["last_name"], profile["email"]):
        for where, text in (("model", sent), ("log", caplog.text), ("decision", logged)):
            assert value not in text, (where, value)
        assert value not in stored, ("thread", value)
    assert "<EMAIL_ADDRESS_1>" in sent


# -- the person: from the key, or from `user`, never both ----------------------------------------


def _key(services: Services, *scopes: str, subject: str | None = None) -> str:
    with services.db.session() as session:
        plain, _ = create_key(session, name="openai-test", scopes=scopes, subject_user_id=subject)
    return plain


def test_a_bound_key_speaks_for_its_person_and_no_one_else(
    services_as: Callable[..., Services], base_url: str, demo_services: Services
) -> None:
    secured = services_as(settings=demo_services.settings.model_copy(update={"auth": "keys"}))
    client = sdk(base_url, _key(secured, "chat", subject="u_0156"))
    messages = [{"role": "user", "content": "tea"}]
    own = client.chat.completions.create(model="attune", messages=messages)
    assert own.choices[0].message.content
    assert subject_of(demo_services, own.model_extra["attune"]["decision_id"]) == "user:u_0156"
    assert client.chat.completions.create(model="attune", messages=messages, user="u_0156")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="attune", messages=messages, user="u_0157")
    assert refused.value.body["detail"].startswith("user: this API key acts for user 'u_0156'")
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="attune", messages=messages, user="u_0157", stream=True
        )
    with pytest.raises(openai.AuthenticationError):
        sdk(base_url, "not-a-key").chat.completions.create(model="attune", messages=messages)


def test_an_unbound_key_must_name_the_person(
    services_as: Callable[..., Services], base_url: str, demo_services: Services
) -> None:
    secured = services_as(settings=demo_services.settings.model_copy(update={"auth": "keys"}))
    client = sdk(base_url, _key(secured, "chat"))
    with pytest.raises(openai.UnprocessableEntityError) as unnamed:
        client.chat.completions.create(model="attune", messages=[{"role": "user", "content": "hi"}])
    assert unnamed.value.body["errors"][0]["field"] == "user"
    answer = client.chat.completions.create(
        model="attune",
        messages=[{"role": "user", "content": "hi"}],
        metadata={"anonymous_id": "oa-anon-1"},
    )
    assert answer.choices[0].message.content.startswith("Hello,")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"messages": [{"role": "user", "content": "hi"}], "user": "bad id!"}, "user"),
        ({"messages": [], "user": "u_0158"}, "messages"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}], "user": "u_0158"},
            "messages[0].role",
        ),
        ({"messages": [{"role": "user", "content": " "}], "user": "u_0158"}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": "x" * 2001}], "user": "u_0158"},
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "metadata": {"thread_id": "a|b"}},
            "metadata.thread_id",
        ),
    ],
)
def test_a_bad_request_is_a_422_naming_the_field(base_url: str, body: dict, field: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.text
