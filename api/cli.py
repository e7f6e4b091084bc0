"""The `attune` command: serve, worker, seed, reindex, prune, train, drift, and the groups ingest,
keys and eval.

The groups live in their own modules: `api.cli_ingest`, `api.cli_keys` and `api.cli_eval`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from agents.settings import Settings
from api.cli_eval import evaluate
from api.cli_ingest import ingest
from api.cli_keys import keys
from api.cli_logging import configure_logging
from api.cli_simulate import simulate_command

app = typer.Typer(
    help="Attune: agentic personalization on embedded defaults.", no_args_is_help=True
)
# The groups are added first, in this order, as `attune --help` has always listed them.
app.add_typer(ingest, name="ingest")
app.add_typer(keys, name="keys")
app.add_typer(evaluate, name="eval")
app.command("simulate")(simulate_command)


@app.command()
def serve(
    seed_demo: Annotated[
        bool,
        typer.Option("--seed/--no-seed", help="Load the demo world first, if the store is empty."),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Worker processes (more than one needs PostgreSQL and a Qdrant server)."
        ),
    ] = 1,
) -> None:
    """Serve the API (host and port from ATTUNE_HOST / ATTUNE_PORT)."""
    settings = Settings()
    configure_logging(settings)
    embedded = _embedded_parts(settings)
    if workers > 1 and embedded:
        typer.echo(
            f"refusing --workers {workers}: {' and '.join(embedded)} allow one process; to scale, "
            "set ATTUNE_DATABASE_URL=postgresql+psycopg://... and ATTUNE_VECTOR_BACKEND=qdrant "
            "with ATTUNE_QDRANT_URL=http://<qdrant>:6333",
            err=True,
        )
        raise typer.Exit(2)
    import uvicorn

    from agents.factory import build_services
    from agents.reindex import start
    from api.app import create_app
    from retrieval.index import RetrievalError

    if settings.auth == "off" and not _is_loopback(settings.host):
        typer.echo(
            f"refusing to serve on {settings.host} without authentication: "
            "set ATTUNE_AUTH=keys and create keys with 'attune keys create'",
            err=True,
        )
        raise typer.Exit(2)
    if settings.auth == "off":
        logging.getLogger("attune").warning(
            "authentication is off (ATTUNE_AUTH=off): every local caller has every scope"
        )
    try:
        services = build_services(settings)
    except RetrievalError as error:  # e.g. ATTUNE_QDRANT_URL unreachable: one line, no trace
        reason = " ".join(str(error).split())
        typer.echo(
            f"cannot start: the vector index is unavailable ({reason}). Start Qdrant there, fix "
            "ATTUNE_QDRANT_URL, or unset ATTUNE_VECTOR_BACKEND to use the embedded index.",
            err=True,
        )
        raise typer.Exit(2) from None
    # The demo world goes only into an empty store; a missing index is rebuilt from the store.
    start(services, settings.demo_dir if seed_demo else None)
    if workers > 1:
        # Each worker process builds its own services from the same settings.
        services.close()
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,
        )
        return
    uvicorn.run(
        create_app(services=lambda: services),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # its lines hold raw paths (user ids); the app logs route templates
        log_config=None,  # uvicorn's lines go through configure_logging (text or JSON)
    )


def _embedded_parts(settings: Settings) -> list[str]:
    """The parts of this configuration that hold to one process: SQLite, and Qdrant Edge or
    qdrant-client's local mode (each locks its folder)."""
    parts = []
    if settings.resolved_database_url.startswith("sqlite"):
        parts.append("the SQLite store")
    if settings.vector_backend == "edge":
        parts.append("the embedded Qdrant Edge index")
    elif not settings.qdrant_url:
        parts.append("qdrant-client's local mode")
    return parts


@app.command("worker")
def worker_command() -> None:
    """Run durable copy jobs, and reward decisions whose attribution window closed, from the
    database until stopped (Ctrl-C or SIGTERM).

    Set ATTUNE_JOBS_IN_API=false on the API processes so that only workers run jobs. With the
    embedded defaults, run it only while the service is stopped (one process at a time).
    """
    import signal

    from agents.copy.jobs import JobRunner
    from agents.factory import build_services
    from agents.reindex import start
    from agents.rewards import RewardSweeper

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    start(services, None)  # an index missing from this worker's home is rebuilt from the store
    runner = JobRunner(services)
    sweeper = RewardSweeper(services, settings.reward_sweep_s)
    signal.signal(signal.SIGTERM, lambda *_: runner.close())
    logging.getLogger("attune.jobs").info("worker %s is taking copy jobs", runner.worker)
    try:
        runner.wait()
    except KeyboardInterrupt:
        runner.close()
    finally:
        runner.join()
        sweeper.close()
        services.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("seed")
def seed_command(
    folder: Annotated[Path | None, typer.Argument(help="A folder in the demo format.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Load into a store that is not empty: adds what is missing; stored people "
            "keep their consent and erased people stay erased."
        ),
    ] = False,
) -> None:
    """Load the demo world (items, offers, users, events) into the store and the index."""
    from agents.factory import build_services
    from agents.seed import seed

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    try:
        report = seed(services, folder or settings.demo_dir, force=force)
    finally:
        services.close()
    typer.echo(json.dumps(asdict(report)))


@app.command("export-onnx")
def export_onnx_command() -> None:
    """Export the embedding model to ONNX (once; kept while its weights' sha256 is unchanged).

    The service runs the export on ONNX Runtime (ATTUNE_EMBEDDING_BACKEND); without it, on torch.
    """
    from agents.factory import export_embedder

    settings = Settings()
    configure_logging(settings)
    folder = export_embedder(settings)
    if folder is None:
        typer.echo("ATTUNE_EMBEDDING_BACKEND is torch: nothing to export")
        return
    typer.echo(str(folder))


@app.command("reindex")
def reindex_command() -> None:
    """Rebuild the vector index from the store: items re-embedded, collaborative vectors restored.

    Run it while the service is stopped: the embedded vector index allows one process at a time.
    """
    from agents.factory import build_services
    from agents.reindex import reindex

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    try:
        report = reindex(services)
    finally:
        services.close()
    typer.echo(json.dumps(asdict(report)))


@app.command("prune")
def prune_command(
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Keep this many days (default ATTUNE_DECISION_RETENTION_DAYS)."),
    ] = None,
) -> None:
    """Delete decisions (and their rewards) older than the retention; bandit state is kept."""
    from agents.privacy.retention import prune
    from store.db import Database

    settings = Settings()
    configure_logging(settings)
    db = Database(settings.resolved_database_url)
    try:
        typer.echo(json.dumps(prune(settings, db, days=days)))
    finally:
        db.dispose()


@app.command("train")
def train_command(
    full: Annotated[
        bool, typer.Option("--full", help="Refit from scratch instead of updating.")
    ] = False,
) -> None:
    """Train the collaborative vectors from the event store (incremental unless --full), refit
    the item-item re-ranking model (`retrieval.sequence`, in ATTUNE_HOME/itemitem), then the
    predictions (churn risk, next purchase per category) stored as features.

    Run it while the service is stopped: the embedded vector index allows one process at a time.
    """
    from agents.drift import mark_reference
    from agents.factory import build_services
    from agents.predictions import train_predictions
    from agents.retrain import fit_itemitem
    from agents.services import collab_folder
    from retrieval.collab import train

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    consent = services.policy.purpose_for("profiling")
    try:
        report = train(
            services.db, services.index, collab_folder(settings), full=full, consent=consent
        )
        item_item = fit_itemitem(services)
        now = datetime.now(UTC)
        predictions = train_predictions(services.db, consent=consent, now=now)
        mark_reference(settings, services.db, now)  # the drift windows start again
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    finally:
        services.close()
    typer.echo(
        json.dumps(
            {
                **asdict(report),
                "itemitem_items": len(item_item.item_ids),
                "predictions": asdict(predictions) if predictions else None,
            }
        )
    )


@app.command("drift")
def drift_command(
    retrain: Annotated[
        bool | None,
        typer.Option(
            "--retrain/--no-retrain", help="Train when a threshold is crossed (default: setting)."
        ),
    ] = None,
) -> None:
    """Check the drift monitors now and print the report; exit 1 when a threshold is crossed.

    With retraining (ATTUNE_DRIFT_RETRAIN=1 or --retrain) a crossing trains as `attune train`
    does. Run it while the service is stopped, as `attune train`; the service checks by itself
    every ATTUNE_DRIFT_CHECK_SECONDS.
    """
    from agents.factory import build_services
    from agents.retrain import check

    settings = Settings()
    configure_logging(settings)
    services = build_services(settings)
    try:
        report = check(services, retrain=retrain)
    finally:
        services.close()
    typer.echo(json.dumps(report.as_dict()))
    if report.breached:
        raise typer.Exit(1)
