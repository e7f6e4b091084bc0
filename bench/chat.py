"""Chat overhead before the first upstream byte, over HTTP, on the demo world.

A fake OpenAI-compatible server on 127.0.0.1 answers at once; the figure is the time from the
client sending `POST /v1/chat` to the fake server receiving the model request: what our side
(auth, subject, PII guard, profile, checkpoint, prompt, SDK) costs before the model can start.
Also reported: time to the first token event and to the final event, as the client saw them.

Prints JSON (p50/p95/p99 in milliseconds) and writes `bench/results/chat.json`. Run with
`.venv/bin/python bench/chat.py [--n 100] [--home DIR]`. Target: p50 ≤ 30 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from agents.factory import build_services, settle
from agents.reindex import start as start_service
from api.app import create_app
from bench.decide import QUERIES, percentiles
from bench.http_load import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_openai import Reply, fake_openai

from bench.report import emit, product_settings

ANSWER = "Happy to help: tell me a little more about what you like and I will look it up."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="chat turns measured")
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/chat.json"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-chat-"))
    with fake_openai([Reply(content=ANSWER)]) as fake:
        settings = product_settings(
            home=home, seed=1, openai_base_url=fake.base_url, openai_model="fake"
        )
        services = build_services(settings)
        start_service(services, settings.demo_dir)
        lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
        # Only people who allow LLM processing reach the model; the others get the offline plan.
        users = [
            user["user_id"]
            for user in map(json.loads, filter(None, lines))
            if user["consent"].get("llm_processing")
        ]
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(services=lambda: services),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        settle()

        before_upstream, first_token, total = [], [], []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(20 + args.n):  # 20 warm-up turns: caches, lazy imports, SQLite pages
                body = {"user_id": users[i % len(users)], "message": QUERIES[i % len(QUERIES)]}
                seen = len(fake.exchanges)
                token_at = None
                start = time.perf_counter()
                with client.stream("POST", "/v1/chat", json=body) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if token_at is None and line == "event: token":
                            token_at = time.perf_counter()
                end = time.perf_counter()
                if len(fake.exchanges) != seen + 1 or token_at is None:
                    raise SystemExit(f"turn {i} did not reach the model once: {body}")
                if i >= 20:
                    before_upstream.append((fake.exchanges[seen].received_at - start) * 1000)
                    first_token.append((token_at - start) * 1000)
                    total.append((end - start) * 1000)
        server.should_exit = True
        thread.join(timeout=10)
        services.close()

    results = {
        "what": "POST /v1/chat over HTTP (uvicorn, 127.0.0.1), fake model answering at once",
        "embedder": services.embedder.name,
        "pii": services.pii.mode,
        "overhead_before_upstream_request": percentiles(before_upstream),
        "first_token_event": percentiles(first_token),
        "final_event": percentiles(total),
        "target_p50_ms": 30,
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()
