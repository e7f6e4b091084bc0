"""`attune ingest`: load catalog files into the store and the vector index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agents.settings import Settings
from api.cli_logging import configure_logging

ingest = typer.Typer(help="Load data into the store and the vector index.", no_args_is_help=True)


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
    configure_logging(settings)
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
