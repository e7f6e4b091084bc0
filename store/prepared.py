"""Core statements compiled once per dialect and sent as their SQL text: the hottest statements
of a decision (its one read, its two INSERTs), where SQLAlchemy's execution of a compiled
statement costs more than SQLite's own work.

`connection.execute(statement, values)` finds the statement's compiled form in the engine's
cache, but then, on every call, builds the parameters of every bind (constants included),
runs the type processors of every value and of every column of every row, and sets up a
result with its metadata. `Prepared` does that work once: it keeps, per dialect, the SQL text,
the parameters' order with the constants already processed, and the type processors of the
values sent and of the columns read; a call sends the text with `exec_driver_sql`, which keeps
what the engine does around a statement (its events, its error handling: a full disk is still
`StorageFull`, a refused transaction still retryable), and the caller converts only the
columns it reads (`Prepared.converters`).
Both dialects work alike: the SQL and the processors are the dialect's own.
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
    bind: dict[str, Processor]  # the processor of each parameter a call gives


class Prepared:
    """`statement` (a Core SELECT or INSERT, built once) compiled once per dialect; an INSERT
    takes the values of `columns`, all of them on every call (no column default is applied)."""

    def __init__(self, statement: Any, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._columns = list(columns) if columns is not None else None
        self._by_dialect: dict[str, _Compiled] = {}
        self._converters: dict[str, tuple[Processor | None, ...]] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=self._columns)
        if getattr(compiled, "insert_prefetch", None) or compiled.post_compile_params:
            raise ValueError("a prepared statement takes every value as given, and no IN list")
        binds = compiled.binds
        names = tuple(compiled.positiontup or binds)
        constants, bind = {}, {}
        for name in dict.fromkeys(names):
            parameter = binds[name]
            processor = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            if parameter.required:  # a value each call gives
                bind[name] = processor or _same
            else:
                value = parameter.effective_value
                constants[name] = processor(value) if processor else value
        found = _Compiled(compiled.string, bool(compiled.positiontup), names, constants, bind)
        return self._by_dialect.setdefault(dialect.name, found)

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """Run the statement with `values` (by parameter name); the raw cursor result."""
        compiled = self._compiled(connection.dialect)
        given = {name: process(values[name]) for name, process in compiled.bind.items()}
        if compiled.positional:
            given |= compiled.constants
            return connection.exec_driver_sql(
                compiled.sql, tuple(given[name] for name in compiled.names)
            )
        return connection.exec_driver_sql(compiled.sql, compiled.constants | given)

    def converters(self, connection: Connection, result: Any) -> tuple[Processor | None, ...]:
        """The conversion of each column of the SELECT's `result` from what the driver returns
        to what `connection.execute` would return (JSON decoded, timestamps made aware...);
        None: as is. Worked out once per dialect, from the types the driver reports."""
        dialect = connection.dialect
        found = self._converters.get(dialect.name)
        if found is None:
            described = result.cursor.description
            found = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, described[i][1])
                for i, column in enumerate(self.statement.selected_columns)
            )
            self._converters[dialect.name] = found
        return found


def _same(value: Any) -> Any:
    return value
