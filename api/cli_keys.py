"""`attune keys`: create, list and revoke API keys."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agents.settings import Settings

keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


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
