"""One attack through the service: the requests the attacker makes (streamed chat, decide, plain
API calls), what came back, and every log record written meanwhile.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from evals.safety.adversary import Adversary
from evals.safety.attacks import Prepared
from evals.safety.bypasses import Answer
from store.schemas import Channel


@dataclass
class Exchange:
    """One request the attacker made and what came back."""

    status: int
    shown: list[str] = field(default_factory=list)  # everything the attacker was shown
    withdrawn: list[str] = field(default_factory=list)  # tokens streamed, then reset
    answer: Answer | None = None
    tool_events: list[dict[str, Any]] = field(default_factory=list)
    model_calls: list[tuple[str, str]] = field(default_factory=list)  # name, raw arguments
    degraded: list[str] = field(default_factory=list)
    decision_id: str | None = None
    thread_id: str | None = None


@dataclass
class Evidence:
    exchanges: list[Exchange]
    model: list[str] = field(default_factory=list)  # what the service sent the model
    logs: list[str] = field(default_factory=list)
    decision_log: list[str] = field(default_factory=list)


class LogCapture(logging.Handler):
    """Every log record, formatted, tagged with the attack that was running."""

    # The HTTP client's own transport logs (the test client's and the SDK's), under either
    # name the client is installed with here.
    IGNORED = re.compile(r"^(?:httpx|httpcore)\d*(?:\.|$)")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.current = "setup"
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.IGNORED.match(record.name):
            return
        try:
            text = self.format(record)
        except (TypeError, ValueError):  # a bad format string still says what it logged
            text = f"{record.name} {record.msg!r} {record.args!r}"
        self.records.append((self.current, text))


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    level = root.level
    detached = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in (root, *detached):
        logger.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger in (root, *detached):
            logger.removeHandler(handler)
        root.setLevel(level)


def run_attack(
    client: TestClient, prepared: Prepared, key: str, adversary: Adversary
) -> list[Exchange]:
    attack = prepared.attack
    headers = {"Authorization": f"Bearer {key}"}
    if prepared.request is not None:
        request = prepared.request
        response = client.request(request.method, request.path, json=request.body, headers=headers)
        return [Exchange(status=response.status_code, shown=_body_strings(response))]
    exchanges = []
    thread_id = None
    for number, message in enumerate(prepared.messages):
        body: dict[str, Any] = {"user_id": attack.attacker, "channel": attack.channel.value}
        if attack.route == "chat":
            body |= {"message": message} | ({"thread_id": thread_id} if thread_id else {})
        else:
            body |= {"query": message, "context": prepared.context if number == 0 else {}}
        body |= prepared.body
        calls_before = len(adversary.calls)
        if attack.route == "chat":
            exchange = _chat(client, body, headers)
            thread_id = exchange.thread_id or thread_id
        else:
            exchange = _decide(client, body, headers, attack.channel)
        exchange.model_calls = adversary.calls[calls_before:]
        exchanges.append(exchange)
    return exchanges


def _chat(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> Exchange:
    with client.stream("POST", "/v1/chat", json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return Exchange(status=response.status_code, shown=_body_strings(response))
        exchange = Exchange(status=200)
        tokens: list[str] = []
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line.removeprefix("data: "))
            if event == "token":
                tokens.append(data["text"])
                continue
            if event == "reset":
                exchange.withdrawn += tokens
                tokens = []
            elif event == "tool":
                exchange.tool_events.append(data)
            elif event == "final":
                exchange.answer = Answer(
                    text=data["reply"],
                    offer_id=(data.get("offer") or {}).get("offer_id"),
                    item_ids=[i["item_id"] for i in data["items"]],
                    channel=Channel(body["channel"]),
                )
                exchange.degraded = list(data["degraded"])
                exchange.decision_id = data["decision_id"]
                exchange.thread_id = data["thread_id"]
            elif event == "error":
                exchange.status = 500
            exchange.shown += strings(data)
        exchange.shown += tokens
    return exchange


def _decide(
    client: TestClient, body: dict[str, Any], headers: dict[str, str], channel: Channel
) -> Exchange:
    response = client.post("/v1/decide", json=body, headers=headers)
    exchange = Exchange(status=response.status_code, shown=_body_strings(response))
    if response.status_code == 200:
        data = response.json()
        exchange.answer = Answer(
            text=data["content"],
            offer_id=(data.get("offer") or {}).get("offer_id"),
            item_ids=[i["item_id"] for i in data["items"]],
            channel=channel,
        )
        exchange.degraded = list(data["degraded"])
        exchange.decision_id = data["decision_id"]
    return exchange


def service_text(bodies: Iterable[dict[str, Any]], emitted: set[str]) -> list[str]:
    """Every string of the request bodies the service wrote; the assistant messages that only
    repeat what the adversary wrote are left out (the model cannot learn from its own words)."""
    texts: list[str] = []
    for body in bodies:
        for key, value in body.items():
            if key != "messages":
                texts += strings(value)
        for message in body.get("messages", []):
            if message.get("role") != "assistant":
                texts += strings(message)
                continue
            if message.get("content") and message["content"] not in emitted:
                texts.append(str(message["content"]))
            for call in message.get("tool_calls") or []:
                if call["function"]["arguments"] not in emitted:
                    texts.append(call["function"]["arguments"])
    return texts


def _body_strings(response: Any) -> list[str]:
    """A response body as the strings in it (JSON), or as its text."""
    try:
        return strings(response.json())
    except ValueError:
        return [response.text]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


# -- the suite kind -------------------------------------------------------------------------------------
