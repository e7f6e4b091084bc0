"""Core statements compiled once per dialect and sent as their SQL text: the hottest statements
of a decision (its one read, its two INSERTs), where SQLAlchemy's execution of a compiled
statement costs more than SQLite's own work.

`connection.execute(statement, values)` finds the statement's compiled form in the engine's
cache, but then, on every call, builds the parameters of every bind (constants included),
runs the type processors of every value and of every column of every row, and sets up a
result with its metadata. `Prepared` does that work once: it keeps, per dialect, the SQL text,
the parameters' order with the constants already processed, and the type processors of the
values sent and of the columns read. Both dialects work alike: the SQL and the processors are
the dialect's own.

Two ways to run it:
- `execute` sends the text with `exec_driver_sql`, which keeps all that the engine does around
  a statement and hands back a `CursorResult` (the decision's INSERTs).
- `fetch` goes one level lower, for the decision's one read: the text runs on the DBAPI cursor
  of the connection's pooled DBAPI connection, and the rows come back as the driver gives them.
  Even `exec_driver_sql` sets up an execution context and a `CursorResult` whose metadata
  matches every column of the cursor's description by name (`CursorResult._init_metadata`,
  `_merge_cursor_description`): for the decision's read, some thirty columns, that was about
  half of the CPU of running it, and all of it is known once the statement is compiled. What
  the engine does around a statement is kept, by the engine's own hooks: the
  `before_cursor_execute` and `after_cursor_execute` listeners run (statement counts in the
  tests and benches; they get the `Connection`, and no execution context: None), and a driver
  error goes through `Connection._handle_dbapi_exception` as any statement's does — the
  `handle_error` listeners (a full disk becomes `StorageFull`), the invalidation of a
  connection the server dropped, and the `DBAPIError` that `Database.transaction` retries on.
  The dialect's `do_execute` sends it, as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]  # the parameters in the order the SQL takes them
    constants: dict[str, Any]  # processed values of the binds given in the statement
    given: tuple[str, ...]  # the parameters a call gives
    processed: tuple[tuple[str, Processor], ...]  # those of them the dialect processes


class Prepared:
    """`statement` (a Core SELECT or INSERT, built once) compiled once per dialect; an INSERT
    takes the values of `columns`, all of them on every call (no column default is applied)."""

    def __init__(self, statement: Any, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._columns = list(columns) if columns is not None else None
        self._by_dialect: dict[str, _Compiled] = {}
        self._converters: dict[str, tuple[Processor | None, ...]] = {}
        self._conversions: dict[str, tuple[tuple[int, Processor], ...]] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=self._columns)
        if getattr(compiled, "insert_prefetch", None) or compiled.post_compile_params:
            raise ValueError("a prepared statement takes every value as given, and no IN list")
        binds = compiled.binds
        names = tuple(compiled.positiontup or binds)
        constants, given, processed = {}, [], []
        for name in dict.fromkeys(names):
            parameter = binds[name]
            processor = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            if parameter.required:  # a value each call gives
                given.append(name)
                if processor is not None:
                    processed.append((name, processor))
            else:
                value = parameter.effective_value
                constants[name] = processor(value) if processor else value
        found = _Compiled(
            compiled.string,
            bool(compiled.positiontup),
            names,
            constants,
            tuple(given),
            tuple(processed),
        )
        return self._by_dialect.setdefault(dialect.name, found)

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """Run the statement with `values` (by parameter name); the raw cursor result."""
        compiled = self._compiled(connection.dialect)
        return connection.exec_driver_sql(compiled.sql, _parameters(compiled, values))

    def fetch(
        self, connection: Connection, values: Mapping[str, Any]
    ) -> tuple[Sequence[Sequence[Any]], tuple[tuple[int, Processor], ...]]:
        """Run the SELECT with `values` (by parameter name) on the DBAPI cursor of
        `connection` (see the module docstring): its rows as the driver returns them, and
        (column index, conversion) of the columns that need one (`converters`)."""
        rows, description = self._run(connection, values, fetch=True)
        dialect = connection.dialect
        conversions = self._conversions.get(dialect.name)
        if conversions is None:
            converters = self._described(dialect, description)
            conversions = tuple((i, c) for i, c in enumerate(converters) if c is not None)
            self._conversions[dialect.name] = conversions
        return rows, conversions

    def send(self, connection: Connection, values: Mapping[str, Any]) -> int:
        """Run the INSERT with `values` (by parameter name) on the DBAPI cursor of
        `connection`, as `fetch` runs a SELECT; nothing is read back but how many rows it
        added (the cursor's `rowcount`)."""
        return int(self._run(connection, values, fetch=False))

    def _run(self, connection: Connection, values: Mapping[str, Any], *, fetch: bool) -> Any:
        dialect = connection.dialect
        compiled = self._compiled(dialect)
        statement, parameters = compiled.sql, _parameters(compiled, values)
        dispatch = connection.dispatch
        cursor = connection.connection.cursor()
        try:
            for listener in dispatch.before_cursor_execute:
                statement, parameters = listener(
                    connection, cursor, statement, parameters, None, False
                )
            dialect.do_execute(cursor, statement, parameters, None)
            dispatch.after_cursor_execute(connection, cursor, statement, parameters, None, False)
            return (cursor.fetchall(), cursor.description) if fetch else cursor.rowcount
        except BaseException as error:
            connection._handle_dbapi_exception(error, statement, parameters, cursor, None)
            raise  # not reached: the handler raises, wrapped
        finally:
            cursor.close()

    def converters(self, connection: Connection, result: Any) -> tuple[Processor | None, ...]:
        """The conversion of each column of the SELECT's `result` from what the driver returns
        to what `connection.execute` would return (JSON decoded, timestamps made aware...);
        None: as is. Worked out once per dialect, from the types the driver reports."""
        found = self._converters.get(connection.dialect.name)
        if found is None:
            found = self._described(connection.dialect, result.cursor.description)
        return found

    def _described(self, dialect: Dialect, described: Any) -> tuple[Processor | None, ...]:
        found = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, described[i][1])
            for i, column in enumerate(self.statement.selected_columns)
        )
        return self._converters.setdefault(dialect.name, found)


def _parameters(compiled: _Compiled, values: Mapping[str, Any]) -> Any:
    """The DBAPI parameters of one call: a tuple in the SQL's order, or a dict by name."""
    if compiled.processed:
        values = dict(values)
        for name, process in compiled.processed:
            values[name] = process(values[name])
    if compiled.positional:
        merged = {**values, **compiled.constants} if compiled.constants else values
        return tuple(map(merged.__getitem__, compiled.names))
    return {name: values[name] for name in compiled.given} | compiled.constants
