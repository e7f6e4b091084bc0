"""Decision latency on the demo world, in process and over HTTP, without an LLM.

Prints JSON: p50/p95/p99 in milliseconds for decisions with and without query text on the web
(Thompson sampling), and decisions per second in process on the app surface, whose offer bandit
is the linear contextual one (LinTS) in the demo policy. Run with
`make bench` or `.venv/bin/python bench/decide.py [--n 300] [--home DIR]`. Figures depend on
the machine; compare medians and ratios between runs, not single numbers.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from agents.settings import Settings
from api.app import create_app
from store.schemas import Channel

QUERIES = [
    "trail running shoes for wet weather",
    "a good red wine for a dinner party",
    "strong coffee beans for espresso",
    "gift for a ten year old who likes puzzles",
    "quiet wireless headphones",
    "cast iron pan",
    "yoga mat that does not slip",
    "cat toys",
]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = np.array(samples_ms)
    return {
        "n": len(samples_ms),
        "p50_ms": round(float(np.percentile(ordered, 50)), 2),
        "p95_ms": round(float(np.percentile(ordered, 95)), 2),
        "p99_ms": round(float(np.percentile(ordered, 99)), 2),
        "mean_ms": round(statistics.fmean(samples_ms), 2),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="decisions per scenario")
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decide.json"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-"))
    settings = Settings(home=home, seed=1)
    services = build_services(settings)
    start_service(services, settings.demo_dir)
    lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
    users = [json.loads(line)["user_id"] for line in lines if line.strip()]
    rng = np.random.default_rng(1)

    def request(i: int, with_query: bool, channel: Channel = Channel.web) -> DecideRequest:
        return DecideRequest(
            channel=channel,
            user_id=str(rng.choice(users)),
            query=QUERIES[i % len(QUERIES)] if with_query else None,
        )

    settle()
    for i in range(20):  # warm-up: caches, lazy imports, SQLite pages
        decide(services, request(i, i % 2 == 0))

    results: dict[str, object] = {
        "embedder": services.embedder.name,
        "vector_backend": services.index.backend,
        "degraded": services.degraded,
    }
    for with_query in (False, True):
        samples = []
        for i in range(args.n):
            req = request(i, with_query)
            start = time.perf_counter()
            decide(services, req)
            samples.append((time.perf_counter() - start) * 1000)
        results[f"in_process_{'with' if with_query else 'without'}_query"] = percentiles(samples)
    # Each decision a day after the last, so that frequency caps never leave a person without an
    # eligible offer and every decision runs its bandit.
    later = datetime.now(UTC)
    offered: dict[str, int] = {}
    for channel, name in ((Channel.web, "thompson"), (Channel.app, "lints")):
        samples = []
        started = time.perf_counter()
        for i in range(args.n):
            req = request(i, False, channel)
            later += timedelta(days=1)
            start = time.perf_counter()
            made = decide(services, req, now=later)
            offered[name] = offered.get(name, 0) + (made.choice is not None)
            samples.append((time.perf_counter() - start) * 1000)
        elapsed = time.perf_counter() - started
        results[f"in_process_{channel.value}_{name}"] = {
            **percentiles(samples),
            "decisions_per_s": round(args.n / elapsed, 1),
            "with_offer": offered[name],
        }

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services=lambda: services), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for with_query in (False, True):
            samples = []
            for i in range(args.n):
                req = request(i, with_query)
                body = {"user_id": req.user_id, "channel": "web", "query": req.query}
                start = time.perf_counter()
                response = client.post("/v1/decide", json=body)
                samples.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
            results[f"http_{'with' if with_query else 'without'}_query"] = percentiles(samples)
    server.should_exit = True
    thread.join(timeout=10)
    services.close()

    text = json.dumps(results, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
