"""The `attune` command: serve, seed, reindex, ingest, eval, prune."""

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
keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys, name="keys")
evaluate = typer.Typer(help="Run eval suites and compare their reports.", no_args_is_help=True)
app.add_typer(evaluate, name="eval")


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
        bool,
        typer.Option("--seed/--no-seed", help="Load the demo world first, if the store is empty."),
    ] = True,
) -> None:
    """Serve the API (host and port from ATTUNE_HOST / ATTUNE_PORT)."""
    import uvicorn

    from agents.factory import build_services
    from agents.reindex import start
    from api.app import create_app

    settings = Settings()
    _logging(settings)
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
    services = build_services(settings)
    # The demo world goes only into an empty store; a missing index is rebuilt from the store.
    start(services, settings.demo_dir if seed_demo else None)
    uvicorn.run(
        create_app(services=lambda: services),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # its lines hold raw paths (user ids); the app logs route templates
    )


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
    _logging(settings)
    services = build_services(settings)
    try:
        report = seed(services, folder or settings.demo_dir, force=force)
    finally:
        services.close()
    typer.echo(json.dumps(asdict(report)))


@app.command("reindex")
def reindex_command() -> None:
    """Rebuild the vector index from the store: items re-embedded, collaborative vectors restored.

    Run it while the service is stopped: the embedded vector index allows one process at a time.
    """
    from agents.factory import build_services
    from agents.reindex import reindex

    settings = Settings()
    _logging(settings)
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
    from agents.retention import prune
    from store.db import Database

    settings = Settings()
    _logging(settings)
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
    """Train the collaborative vectors from the event store (incremental unless --full).

    Run it while the service is stopped: the embedded vector index allows one process at a time.
    """
    from agents.factory import build_services, collab_folder
    from retrieval.collab import train

    settings = Settings()
    _logging(settings)
    services = build_services(settings)
    try:
        report = train(
            services.db,
            services.index,
            collab_folder(settings),
            full=full,
            consent=services.policy.purpose_for("profiling"),
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    finally:
        services.close()
    typer.echo(json.dumps(asdict(report)))


@ingest.command("items")
def ingest_items_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL or CSV file of items.")
    ],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl or csv; by default from the file's extension."),
    ] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FIELD=COLUMN",
            help="Take an item field from a source column, e.g. --map title=name. Repeatable.",
        ),
    ] = None,
    map_file: Annotated[
        Path | None,
        typer.Option("--map-file", help="A YAML file of 'item_field: source_column' lines."),
    ] = None,
    header: Annotated[
        bool,
        typer.Option(
            "--header/--no-header",
            help="Whether the CSV file's first row names its columns; without one, --map "
            "names columns by number from 1, e.g. --map title=2.",
        ),
    ] = True,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            metavar="A,B,C",
            help="Names for the columns of a CSV file without a header row (implies --no-header).",
        ),
    ] = None,
    defaults: Annotated[
        list[str] | None,
        typer.Option(
            "--default",
            metavar="FIELD=VALUE",
            help="A value for an item field that a record lacks, e.g. --default category=toys. "
            "Currency defaults to ATTUNE_CURRENCY. Repeatable.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Records per committed batch.")] = 512,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--restart",
            help="Continue from the checkpoint of an earlier run on the same unchanged file, "
            "or start over.",
        ),
    ] = True,
) -> None:
    """Upsert catalog items from a JSONL or CSV file: validated, stored, embedded and indexed.

    Invalid records are listed at the end and written to FILE.rejects.jsonl; the rest are
    ingested. Exit code 0, or 1 if no valid item was found, 2 if the file or mapping is unusable.
    """
    from tqdm import tqdm

    from agents.factory import build_services
    from retrieval.ingest.run import IngestProgress, ingest_file
    from retrieval.ingest.source import IngestError, prepare_source, read_defaults, read_mapping

    settings = Settings()
    _logging(settings)
    try:
        source = prepare_source(
            file,
            fmt=fmt,
            mapping=read_mapping(maps or (), map_file),
            defaults={"currency": settings.currency, **read_defaults(defaults or ())},
            header=header and columns is None,
            columns=columns.split(",") if columns else (),
        )
    except IngestError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    if source.ignored_columns:
        ignored = ", ".join(map(repr, source.ignored_columns))
        typer.echo(f"warning: ignoring columns that are not item fields: {ignored}", err=True)
    services = build_services(settings)
    committed_line = 0
    with tqdm(total=source.size, unit="B", unit_scale=True, desc=file.name, disable=None) as bar:

        def advance(step: IngestProgress) -> None:
            nonlocal committed_line
            committed_line = step.line
            bar.set_postfix(items=step.ingested, rejected=step.rejected, refresh=False)
            bar.update(step.offset - bar.n)

        try:
            report = ingest_file(
                services.db,
                services.embedder,
                services.index,
                source,
                checkpoints=settings.home / "ingest",
                batch=batch,
                resume=resume,
                progress=advance,
            )
        except IngestError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        except KeyboardInterrupt as interrupt:
            typer.echo(
                f"interrupted: committed up to line {committed_line}; "
                "run the same command again to resume",
                err=True,
            )
            raise typer.Exit(130) from interrupt
        finally:
            services.close()
    for rejection in report.rejections:
        typer.echo(f"{file}:{rejection.line}: {rejection.reason}", err=True)
    if report.rejected > len(report.rejections):
        typer.echo(f"... and {report.rejected - len(report.rejections)} more", err=True)
    if report.rejected_total:
        typer.echo(f"{report.rejected_total} rejected record(s) in {report.rejects_path}", err=True)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(report.summary()))
    if report.ingested_total == 0:
        typer.echo(f"error: no valid item in {file}", err=True)
        raise typer.Exit(1)


@evaluate.command("run")
def eval_run_command(
    suite: Annotated[Path, typer.Argument(help="A suite file (YAML).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder; default var/evals/<suite>-<UTC time>."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run an eval suite and write its report; exit 1 if a threshold fails, 2 if the suite is bad."""
    from evals.base import SuiteError
    from evals.runner import run_suite

    try:
        report = run_suite(suite, out, show_progress=progress)
    except SuiteError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(str(report.out_dir))
    typer.echo(report.summary)
    if not report.passed:
        raise typer.Exit(1)


@evaluate.command("compare")
def eval_compare_command(
    a: Annotated[Path, typer.Argument(help="A report folder.")],
    b: Annotated[Path, typer.Argument(help="Another report folder.")],
) -> None:
    """Compare two eval reports metric by metric (a Markdown table)."""
    from evals.base import EvalError
    from evals.compare import compare_runs

    try:
        typer.echo(compare_runs(a, b), nl=False)
    except EvalError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: decide,chat,copy,events,admin,eval.")
    ],
    subject: Annotated[
        str | None, typer.Option(help="Bind the key to this user id: it acts for them only.")
    ] = None,
) -> None:
    """Create an API key and print it (shown this once; only its hash is stored)."""
    from store.access import audit, create_key
    from store.db import Database

    settings = Settings()
    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            plain, info = create_key(
                session,
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                subject_user_id=subject,
            )
            audit(session, actor="cli", action="key.create", target=f"key:{info.key_id}",
                  scopes=list(info.scopes), bound=subject is not None)  # fmt: skip
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    finally:
        db.dispose()
    typer.echo(json.dumps({"key": plain, **info.to_json()}))


@keys.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from store.access import list_keys
    from store.db import Database

    db = Database(Settings().resolved_database_url)
    try:
        with db.session() as session:
            typer.echo(json.dumps([info.to_json() for info in list_keys(session)], indent=2))
    finally:
        db.dispose()


@keys.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    from store.access import audit, revoke_key
    from store.db import Database
    from store.errors import NotFound

    db = Database(Settings().resolved_database_url)
    try:
        with db.session() as session:
            info = revoke_key(session, key_id)
            audit(session, actor="cli", action="key.revoke", target=f"key:{key_id}")
    except NotFound as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    finally:
        db.dispose()
    typer.echo(json.dumps(info.to_json()))
