"""A database error names no one: its text, as a traceback or `str()` shows it, holds no value
that was sent or stored (`store.db.withhold_values`), on both dialects. PostgreSQL's DETAIL
quotes the refused key or row and a data exception quotes the value; SQLite names only
constraints and columns. What code reads to classify an error (the SQLSTATE) is kept."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from store.db import Database, is_retryable
from store.models import User

PERSON = "u_withheld_7q"  # an id that must not be printed
SECRET = "jo.bloggs.7q@example.org"  # a value that must not be printed


def logged(error: BaseException) -> str:
    """What `log.exception` writes for `error`: its chain, each message and frame."""
    formatter = logging.Formatter()
    return formatter.formatException((type(error), error, error.__traceback__))


def test_a_duplicate_key_is_reported_without_the_key(database_url: str) -> None:
    db = Database(database_url)
    with db.session() as session:
        session.add(User(user_id=PERSON, profile={"email": SECRET}))
    with pytest.raises(IntegrityError) as raised, db.session() as session:
        session.add(User(user_id=PERSON, profile={"email": SECRET}))
    shown = logged(raised.value) + str(raised.value) + str(raised.value.orig)
    assert PERSON not in shown and SECRET not in shown
    if db.engine.dialect.name == "postgresql":
        # What the operator still learns: the kind of error, where, and the SQLSTATE.
        assert "duplicate key value violates unique constraint" in shown
        assert "SQLSTATE 23505" in shown and "constraint users_pkey" in shown
        assert "detail withheld" in shown
        assert raised.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
    else:
        assert "UNIQUE constraint failed: users.user_id" in shown


def test_a_value_the_database_cannot_read_is_not_quoted(database_url: str) -> None:
    db = Database(database_url)
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite converts such a value instead of refusing it")
    with pytest.raises(DataError) as raised, db.connect() as connection:
        connection.execute(text("SELECT CAST(:value AS integer)"), {"value": SECRET})
    shown = logged(raised.value) + str(raised.value)
    assert SECRET not in shown
    assert "SQLSTATE 22P02" in shown and "withheld" in shown


def test_a_retryable_error_is_still_recognised(database_url: str) -> None:
    """The rewrite keeps what retries read: a deadlock victim's SQLSTATE."""
    db = Database(database_url)
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the SQLSTATE is PostgreSQL's")
    raise_deadlock = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'x'; END $$"
    with pytest.raises(DBAPIError) as raised, db.connect() as connection:
        connection.execute(text(raise_deadlock))
    assert is_retryable(raised.value)
    assert "SQLSTATE 40P01" in str(raised.value)
