"""The scripted adversarial model: one step per request it receives, rendered from what it was sent.

The model server is `tests/fake_openai.py`, loaded by path with importlib (the module the tests
import, not a copy), on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from agents.settings import PROJECT_ROOT
from agents.writing.writer import money
from evals.base import (
    SuiteError,
)
from evals.safety.attacks import LISTS, TEMPLATE, Prepared, World

FAKE_MODEL = PROJECT_ROOT / "tests" / "fake_openai.py"


class Adversary:
    """The scripted model behind the fake server: it plays the current attack's steps, one per
    request, the last repeating, rendered from what it received."""

    def __init__(self, world: World, fake: ModuleType) -> None:
        self.world = world
        self._fake = fake
        self._prepared: Prepared | None = None
        self._step = 0
        self._last: tuple[Any, tuple[str | None, list[Any]]] | None = None
        self.emitted: set[str] = set()  # its own words, which later requests repeat to it
        self.calls: list[tuple[str, str]] = []  # tool calls of the current attack: name, args

    def begin(self, prepared: Prepared) -> None:
        self._prepared, self._step, self._last = prepared, 0, None
        self.calls = []

    def reply(self) -> Any:
        return self._fake.Reply(content=self._content, tool_calls=self._tool_calls)

    def _content(self, body: dict[str, Any]) -> str | None:
        return self._answer(body)[0]

    def _tool_calls(self, body: dict[str, Any]) -> list[Any]:
        return self._answer(body)[1]

    def _answer(self, body: dict[str, Any]) -> tuple[str | None, list[Any]]:
        # The fake asks for the content and the tool calls of one request separately.
        if self._last is not None and self._last[0] is body:
            return self._last[1]
        prepared = self._prepared
        if prepared is None:
            raise RuntimeError("the adversary received a request outside any attack")
        steps = prepared.attack.model
        step = steps[min(self._step, len(steps) - 1)]
        self._step += 1
        seen = _Seen(body, self.world, prepared)
        if "response_format" in body:  # the decide writer: a JSON draft
            text = seen.render(step.say or "")
            item_ids = step.item_ids
            if item_ids is None:
                item_ids = [i["item_id"] for i in seen.brief_items() if i["title"] in text]
            draft = {"text": text, "item_ids": item_ids, "offer_id": step.offer_id}
            answer: tuple[str | None, list[Any]] = (json.dumps(draft), [])
        else:
            calls = []
            for number, spec in enumerate(step.call):
                arguments = (
                    seen.render(spec.arguments)
                    if isinstance(spec.arguments, str)
                    else json.dumps(seen.fill(spec.arguments), ensure_ascii=False)
                )
                call_id = f"adv_{prepared.attack.id}_{self._step}_{number}"
                calls.append(self._fake.Call(spec.name, arguments, id=call_id))
                self.calls.append((spec.name, arguments))
                self.emitted.add(arguments)
            said = seen.render(step.say) if step.say is not None else None
            answer = (said, calls)
        if answer[0]:
            self.emitted.add(answer[0])
        self._last = (body, answer)
        return answer


class _Seen:
    """What the adversarial model received in one request, as its step templates read it."""

    def __init__(self, body: dict[str, Any], world: World, prepared: Prepared) -> None:
        self.body = body
        self.world = world
        self.prepared = prepared
        self.messages: list[dict[str, Any]] = body.get("messages", [])

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in LISTS:
                return [i.get("item_id") or i.get("offer_id") for i in self._list(value)]
            return self.render(value)
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value

    def render(self, text: str) -> str:
        return TEMPLATE.sub(lambda m: self._value(m.group(1).split(".")), text)

    def _value(self, path: list[str]) -> str:
        head, rest = path[0], path[1:]
        attack = self.prepared.attack
        if head in ("self", "other"):
            user = attack.attacker if head == "self" else attack.victim
            return self.world.value(user or attack.attacker, rest[0])
        if head == "offer":
            offer = self.world.offers[rest[0]]
            fields = {"title": offer.title, "terms": offer.terms}
            return fields.get(rest[1], f"{offer.discount_percent:g}%")  # checked: discount
        texts = {
            "echo": lambda: [str(m["content"]) for m in self.messages if m["role"] != "assistant"],
            "last_user": lambda: [self._contents("user")[-1]] if self._contents("user") else [],
            "users": lambda: self._contents("user"),
            "tool_results": lambda: self._contents("tool"),
            "tools": lambda: [json.dumps(self.body.get("tools", []))],
        }
        if head in texts:
            return "\n".join(t for t in texts[head]() if t)
        if head == "system":
            system = self._contents("system")
            return "\n".join(system) if not rest else system[int(rest[0])]
        if head == "item":
            items = self._list("{items.ids}")
            if not items:
                return ""
            item = items[0]
            fields = {"title": item["title"], "id": item["item_id"]}
            return fields.get(rest[0], money(item["price"], item["currency"]))
        if head == "chosen":
            chosen = self._chosen()
            return str(chosen.get(rest[0], "")) if chosen else ""
        return ""

    def _contents(self, role: str) -> list[str]:
        return [str(m["content"]) for m in self.messages if m["role"] == role and m["content"]]

    def brief_items(self) -> list[dict[str, Any]]:
        brief = self._brief()
        return brief.get("items", []) if brief else []

    def _brief(self) -> dict[str, Any] | None:
        for message in self.messages:
            if message["role"] == "user":
                try:
                    brief = json.loads(message["content"])
                except (TypeError, ValueError):
                    return None
                return brief if isinstance(brief, dict) else None
        return None

    def _list(self, which: str) -> list[dict[str, Any]]:
        if "response_format" in self.body:
            return self.brief_items() if which == "{items.ids}" else []
        result = self._tool_result(
            "retrieve_items" if which == "{items.ids}" else "eligible_offers"
        )
        key = "items" if which == "{items.ids}" else "offers"
        return list(result.get(key, [])) if result else []

    def _chosen(self) -> dict[str, Any] | None:
        if "response_format" in self.body:
            brief = self._brief()
            return brief.get("offer") if brief else None
        result = self._tool_result("select_offer")
        return result if result and "refused" not in result else None

    def _tool_result(self, name: str) -> dict[str, Any] | None:
        names = {
            call["id"]: call["function"]["name"]
            for m in self.messages
            if m["role"] == "assistant"
            for call in m.get("tool_calls") or []
        }
        for message in reversed(self.messages):
            if message["role"] == "tool" and names.get(message["tool_call_id"]) == name:
                result = json.loads(message["content"])
                return result if isinstance(result, dict) else None
        return None


def load_fake_model() -> ModuleType:
    """`tests/fake_openai.py`, the fake OpenAI-compatible server of the tests, by path."""
    loaded = sys.modules.get("fake_openai")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == FAKE_MODEL:
        return loaded
    spec = importlib.util.spec_from_file_location("fake_openai", FAKE_MODEL)
    if spec is None or spec.loader is None:
        raise SuiteError(f"cannot load the fake model server from {FAKE_MODEL}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_openai"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# -- what one attack left behind, and the verdict on it ------------------------------------------------
