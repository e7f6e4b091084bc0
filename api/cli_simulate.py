"""`attune simulate`: simulated people of the demo world through the real service (in process)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def simulate_command(
    decisions: Annotated[int, typer.Option(min=1, help="Decisions to ask for.")] = 2000,
    people: Annotated[int, typer.Option(min=1, help="Demo people who come back.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the people's choices.")] = 0,
    explicit: Annotated[
        float, typer.Option(min=0, max=1, help="Share of clicks that name their decision.")
    ] = 0.25,
) -> None:
    """Drive the service with simulated people (decide, act, events) and reward the decisions.

    Uses the service's settings (ATTUNE_HOME, ATTUNE_POLICY_PATH); loads the demo world into an
    empty store first. With the embedded store, run it while `attune serve` is stopped. Then
    `attune eval run evals/suites/experiment.yaml` reports the experiment.
    """
    from fastapi.testclient import TestClient

    from agents.factory import build_services
    from agents.reindex import start
    from agents.rewards import settle
    from agents.seed import read_jsonl
    from agents.settings import Settings
    from api.app import create_app
    from api.cli_logging import configure_logging
    from evals.simulate import simulate
    from store.schemas import Offer, UserRecord

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    start(services, settings.demo_dir)
    users = [u.user_id for u in read_jsonl(settings.demo_dir / "users.jsonl", UserRecord)]
    offers = {
        o.offer_id: o.model_dump(mode="json")
        for o in read_jsonl(settings.demo_dir / "offers.jsonl", Offer)
    }
    try:
        with TestClient(create_app(services=lambda: services)) as client:
            done = simulate(
                client,
                users[:people],
                offers,
                decisions=decisions,
                settle=lambda now: settle(services, now),
                window_hours=services.policy.policy.rewards.window_hours,
                seed=seed,
                explicit=explicit,
            )
    finally:
        services.close()
    typer.echo(
        json.dumps(
            {
                "decisions": done.decisions,
                "arms": done.arms,
                "events": done.events,
                "attributed": done.attributed,
            }
        )
    )
