"""The graphs of `langgraph.json` (`agents/studio.py`), in process: their input schemas name the
person and the channel, a run decides or chats for that person with the services of the process,
and importing them loads nothing heavy (LangGraph's dev server imports them on its event loop).
`bench/langgraph_dev.py` runs them under `langgraph dev` itself, through its HTTP API."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents import environment
from agents.services import Services
from agents.settings import PROJECT_ROOT
from agents.studio import chat_graph, decide_graph
from store.decisions import get_decision


@pytest.fixture
def in_process(demo_services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.setattr(environment, "_services", demo_services)
    return demo_services


@pytest.mark.parametrize(
    "graph, fields",
    [
        (decide_graph, {"user_id", "anonymous_id", "channel", "query", "k"}),
        (chat_graph, {"user_id", "anonymous_id", "channel", "message", "thread_id"}),
    ],
)
def test_the_input_schema_names_the_person_and_the_channel(graph, fields: set[str]) -> None:
    schema = graph().get_input_jsonschema()
    assert fields <= set(schema["properties"])
    assert set(schema["$defs"]["Channel"]["enum"]) >= {"web", "app", "email", "push"}


def test_a_decide_run_decides_for_the_person(in_process: Services) -> None:
    out = decide_graph().invoke({"user_id": "u_0170", "channel": "app", "query": "tea"})
    decision = out["decision"]
    assert decision["items"] and decision["channel"] == "app" and decision["content"]
    with in_process.db.session() as session:
        assert get_decision(session, decision["decision_id"]).subject_key == "user:u_0170"


def test_a_chat_run_answers_the_person(in_process: Services) -> None:
    out = chat_graph().invoke({"anonymous_id": "studio-anon-1", "message": "tea for a friend"})
    answer = out["answer"]
    assert answer["reply"] and answer["thread_id"]
    with in_process.db.session() as session:
        assert get_decision(session, answer["decision_id"]).subject_key == "anon:studio-anon-1"


def test_importing_the_graphs_loads_nothing_heavy() -> None:
    probe = (
        "import sys, agents.studio as s; s.decide_graph(); s.chat_graph(); "
        "print(sorted(m for m in ('torch', 'presidio_analyzer', 'agents.factory', "
        "'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
