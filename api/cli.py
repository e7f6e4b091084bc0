"""The `attune` command: serve, seed, ingest."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from agents.settings import Settings

app = typer.Typer(
    help="Attune: agentic personalization on embedded defaults.", no_args_is_help=True
)
ingest = typer.Typer(help="Load data into the store and the vector index.", no_args_is_help=True)
app.add_typer(ingest, name="ingest")


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Presidio logs every analysis at INFO; its warnings are what matter here.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    logging.getLogger("presidio-anonymizer").setLevel(logging.WARNING)


@app.command()
def serve(
    seed_demo: Annotated[
        bool, typer.Option("--seed/--no-seed", help="Load the demo world first.")
    ] = True,
) -> None:
    """Serve the API (host and port from ATTUNE_HOST / ATTUNE_PORT)."""
    import uvicorn

    from agents.factory import build_services
    from agents.seed import seed
    from api.app import create_app

    settings = Settings()
    _logging(settings)
    services = build_services(settings)
    if seed_demo:
        seed(services, settings.demo_dir)
    uvicorn.run(
        create_app(services=lambda: services),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command("seed")
def seed_command(
    folder: Annotated[Path | None, typer.Argument(help="A folder in the demo format.")] = None,
    force: Annotated[bool, typer.Option(help="Load again even if already loaded.")] = False,
) -> None:
    """Load the demo world (items, offers, users, events) into the store and the index."""
    from agents.factory import build_services
    from agents.seed import seed

    settings = Settings()
    _logging(settings)
    services = build_services(settings)
    try:
        report = seed(services, folder or settings.demo_dir, force=force)
    finally:
        services.close()
    typer.echo(json.dumps(asdict(report)))


@ingest.command("items")
def ingest_items_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file of items.")
    ],
) -> None:
    """Upsert catalog items from a JSONL file: stored, embedded and indexed."""
    from agents.factory import build_services
    from agents.seed import read_jsonl
    from retrieval.catalog import ingest_items
    from store.schemas import Item

    settings = Settings()
    _logging(settings)
    services = build_services(settings)
    try:
        count = ingest_items(services.db, services.embedder, services.index, read_jsonl(file, Item))
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    finally:
        services.close()
    typer.echo(json.dumps({"ingested": count}))
