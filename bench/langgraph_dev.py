"""Smoke run of `langgraph dev` with `langgraph.json`: both graphs load, and a run of each from the
dev server's HTTP API answers with a decision logged in the store.

Steps: seed the demo world into a fresh ATTUNE_HOME; start `langgraph dev --no-browser --port
<free> --no-reload` on 127.0.0.1 with that home; wait for /ok; check that the assistants `decide`
and `chat` exist and that their input schemas name the person and the channel; create a run of
each with POST /runs/wait; check the answers (items, a decision id found in the store) and that
the server logged no blocking call and no error; stop the server. Prints JSON figures (seconds to
start, to the first decision, to a second decision) and exits 1 on any failure.

Too slow for the test suite (the first run builds the services: embedder, PII guard, index), and
it needs the dev server installed beside the environment (requirements/langgraph-dev.txt):

    .venv/bin/pip install --no-deps --target var/langgraph-dev -r requirements/langgraph-dev.txt
    .venv/bin/python bench/langgraph_dev.py [--server var/langgraph-dev]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, default=ROOT / "var" / "langgraph-dev")
    parser.add_argument(
        "--home",
        type=Path,
        help="An ATTUNE_HOME already seeded (and served by nothing else); default: a fresh one.",
    )
    args = parser.parse_args()
    cli = args.server / "bin" / "langgraph"
    check(cli.exists(), f"no langgraph CLI at {cli}: install requirements/langgraph-dev.txt there")
    with tempfile.TemporaryDirectory(prefix="attune-langgraph-") as fresh:
        home = args.home or Path(fresh)
        env = {
            **os.environ,
            "ATTUNE_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(args.server.resolve()), str(ROOT)]),
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
        }
        if args.home is None:
            subprocess.run(
                [sys.executable, "-c", "from api.cli import app; app()", "seed"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        figures = run_server(cli, env, home)
    print(json.dumps(figures, indent=2))


def run_server(cli: Path, env: dict[str, str], home: Path) -> dict[str, Any]:
    port = free_port()
    log_path = home / "langgraph-dev.log"  # kept: read it when a check fails
    started = time.perf_counter()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, str(cli), "dev", "--no-browser", "--no-reload", *on_port(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=RUN_TIMEOUT_S) as http:
            wait_until_up(http, server)
            up = time.perf_counter() - started
            figures = exercise(http, home)
        figures["seconds_to_start"] = round(up, 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text())  # without the colours
    check("Blocking" not in text, "the dev server logged a blocking call:\n" + text[-3000:])
    check("[error" not in text, "the dev server logged an error:\n" + text[-3000:])
    return figures


def on_port(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


def wait_until_up(http: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        check(server.poll() is None, "langgraph dev exited before it answered")
        try:
            if http.get("/ok", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"FAILED: langgraph dev did not answer within {START_TIMEOUT_S} s")


def exercise(http: httpx.Client, home: Path) -> dict[str, Any]:
    assistants = http.post("/assistants/search", json={"limit": 10}).json()
    graphs = {a["graph_id"]: a["assistant_id"] for a in assistants}
    check(set(graphs) >= {"decide", "chat"}, f"graphs listed: {sorted(graphs)}")
    for graph, fields in (
        ("decide", {"user_id", "anonymous_id", "channel", "query"}),
        ("chat", {"user_id", "anonymous_id", "channel", "message"}),
    ):
        schema = http.get(f"/assistants/{graphs[graph]}/schemas").json()["input_schema"]
        check(fields <= set(schema["properties"]), f"{graph} input schema: {schema}")

    timings: dict[str, Any] = {}
    for label in ("first_decision", "second_decision"):
        began = time.perf_counter()
        out = http.post(
            "/runs/wait",
            json={
                "assistant_id": "decide",
                "input": {"user_id": "u_0001", "channel": "web", "query": "tea"},
            },
        ).json()
        timings[f"seconds_to_{label}"] = round(time.perf_counter() - began, 2)
        decision = out.get("decision") or {}
        check(bool(decision.get("items")), f"decide run answered {json.dumps(out)[:2000]}")
    check(logged(home, decision["decision_id"]), "the decision is not in the store")

    answer = (
        http.post(
            "/runs/wait",
            json={
                "assistant_id": "chat",
                "input": {"user_id": "u_0001", "channel": "web", "message": "something for tea?"},
            },
        )
        .json()
        .get("answer")
        or {}
    )
    check(bool(answer.get("reply")), f"chat run answered {answer}")
    check(logged(home, answer["decision_id"]), "the chat turn is not in the store")
    return {"graphs": sorted(graphs), "items": len(decision["items"]), **timings}


def logged(home: Path, decision_id: str) -> bool:
    import sqlite3

    with sqlite3.connect(home / "attune.db") as db:
        row = db.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
    return row is not None


if __name__ == "__main__":
    main()
