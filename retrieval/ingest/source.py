"""What an ingest reads: the file, its format (JSONL or CSV), the field mapping and the defaults.

A CSV file without a header row names its columns by number (1, 2, ...) or by the names given
for them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from retrieval.index import RetrievalError
from store.schemas import Item

ITEM_FIELDS: tuple[str, ...] = tuple(Item.model_fields)


class IngestError(RetrievalError):
    """The file cannot be ingested as asked: unknown format, unreadable file, bad mapping."""


class SourceFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


EXTENSIONS = {".jsonl": SourceFormat.jsonl, ".ndjson": SourceFormat.jsonl, ".csv": SourceFormat.csv}


@dataclass(frozen=True)
class IngestSource:
    """A file checked and ready to ingest. Build it with `prepare_source`.

    Attributes:
        mapping: Item field → source column (a JSONL key, a CSV header name, or for a CSV file
            without a header a column number from 1 or a name given with `columns`).
        defaults: Item field → value, for records that lack the field (or whose cell is empty).
        header: The CSV header, read or given; empty for JSONL.
        body_offset: Byte offset of the first record, after the CSV header if there is one.
        body_line: Line number of the last line before the first record.
        ignored_columns: CSV columns that are neither an item field nor mapped to one.
    """

    path: Path
    format: SourceFormat
    mapping: Mapping[str, str]
    size: int
    mtime_ns: int
    defaults: Mapping[str, Any] = field(default_factory=dict)
    header: tuple[str, ...] = ()
    body_offset: int = 0
    body_line: int = 0
    ignored_columns: tuple[str, ...] = ()

    @property
    def rejects_path(self) -> Path:
        return self.path.with_name(self.path.name + ".rejects.jsonl")

    @property
    def fingerprint(self) -> str:
        """What a checkpoint must match besides the file: format, mapping, defaults, header."""
        text = json.dumps(
            [
                self.format.value,
                sorted(self.mapping.items()),
                sorted(self.defaults.items()),
                self.header,
            ],
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_mapping(pairs: Sequence[str] = (), file: Path | None = None) -> dict[str, str]:
    """The field mapping, item field → source column, from a YAML file and `FIELD=COLUMN` pairs.

    A pair overrides the file's entry for the same field. Raises IngestError naming an entry
    that is malformed or names a field `Item` does not have.
    """
    mapping = _mapping_file(file) if file is not None else {}
    given: set[str] = set()
    for pair in pairs:
        item_field, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not item_field or not column:
            raise IngestError(f"--map {pair!r} is not FIELD=COLUMN, e.g. --map title=name")
        if item_field in given:
            raise IngestError(f"--map gives {item_field!r} twice; give each item field once")
        given.add(item_field)
        mapping[item_field] = column
    unknown = sorted(set(mapping) - set(ITEM_FIELDS))
    if unknown:
        raise IngestError(
            f"the mapping names {', '.join(map(repr, unknown))}, which items do not have; "
            f"item fields are {', '.join(ITEM_FIELDS)}"
        )
    return mapping


def _mapping_file(file: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise IngestError(f"cannot read the mapping file {file}: {err.strerror}") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise IngestError(f"the mapping file {file} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str | int) and not isinstance(value, bool)
        for key, value in data.items()
    ):
        raise IngestError(
            f"the mapping file {file} must map item fields to source column names or numbers, "
            "one per line, e.g. 'title: name' or 'title: 2'"
        )
    return {key.strip(): str(value).strip() for key, value in data.items()}


def read_defaults(pairs: Sequence[str]) -> dict[str, str]:
    """Defaults for missing item fields from `FIELD=VALUE` pairs, e.g. currency=GBP."""
    defaults: dict[str, str] = {}
    for pair in pairs:
        item_field, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not value or item_field not in ITEM_FIELDS:
            raise IngestError(
                f"--default {pair!r} is not FIELD=VALUE for an item field, e.g. "
                f"--default currency=GBP; item fields are {', '.join(ITEM_FIELDS)}"
            )
        defaults[item_field] = value
    return defaults


def prepare_source(
    path: Path,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    header: bool = True,
    columns: Sequence[str] = (),
) -> IngestSource:
    """Checks a file before ingest: its format (`fmt`, else its extension), that it can be
    read, and for CSV that its header holds every mapped column. Raises IngestError if not.

    A CSV file without a header row takes `header=False`: its columns are then named by
    `columns` if given, else numbered from 1, and the mapping names them so (title=2).
    """
    path = Path(path).absolute()
    mapping = dict(mapping or {})
    defaults = dict(defaults or {})
    columns = tuple(column.strip() for column in columns)
    if fmt is not None:
        try:
            source_format = SourceFormat(fmt.lower())
        except ValueError as err:
            raise IngestError(f"unknown format {fmt!r}: use jsonl or csv") from err
    elif path.suffix.lower() in EXTENSIONS:
        source_format = EXTENSIONS[path.suffix.lower()]
    else:
        raise IngestError(
            f"cannot tell the format of {path.name} from its extension: "
            "name it .jsonl or .csv, or pass --format jsonl|csv"
        )
    if source_format is SourceFormat.jsonl and (columns or not header):
        raise IngestError("--no-header and --columns are for CSV files; JSONL records name keys")
    try:
        stat = path.stat()
        with path.open("rb") as handle:
            if source_format is SourceFormat.jsonl:
                return IngestSource(
                    path, source_format, mapping, stat.st_size, stat.st_mtime_ns, defaults
                )
            lines = Lines(handle, offset=0, line=0)
            names = _csv_header(path, lines, header=header and not columns, columns=columns)
            if not header or columns:
                lines = Lines(handle, offset=0, line=0)  # the first row is a record
    except OSError as err:
        raise IngestError(f"cannot read {path}: {err.strerror}") from err
    for item_field, column in mapping.items():
        if names and column not in names:
            where = "header" if header and not columns else "columns"
            raise IngestError(
                f"the mapping takes {item_field!r} from column {column!r}, which is not in the "
                f"{where} of {path.name} (columns: {', '.join(names)})"
            )
    sources = set(mapping.values())
    return IngestSource(
        path,
        source_format,
        mapping,
        stat.st_size,
        stat.st_mtime_ns,
        defaults,
        header=names,
        body_offset=lines.offset,
        body_line=lines.line,
        ignored_columns=tuple(
            column
            for column in names
            if column not in sources and (column not in ITEM_FIELDS or column in mapping)
        ),
    )


def _csv_header(
    path: Path, lines: Lines, *, header: bool, columns: tuple[str, ...]
) -> tuple[str, ...]:
    """The column names: the header row, or `columns`, or 1, 2, ... as wide as the first row."""
    if columns:
        names = columns
    else:
        try:
            row = next(csv.reader(lines), [])
        except csv.Error as err:
            raise IngestError(f"{path}:1: cannot parse the CSV header: {err}") from err
        if lines.undecodable:
            raise IngestError(f"{path}:1: the CSV header is not valid UTF-8")
        names = (
            tuple(column.strip() for column in row)
            if header
            else tuple(str(n) for n in range(1, len(row) + 1))
        )
    repeated = sorted({column for column in names if names.count(column) > 1})
    if repeated:
        where = f"{path}:1: the CSV header" if header else "--columns"
        raise IngestError(f"{where} repeats {', '.join(map(repr, repeated))}")
    return names


class Lines:
    """The lines of a binary file from a byte offset, decoded as UTF-8, counting bytes and lines.

    A line that is not UTF-8 is decoded with replacement characters and sets `undecodable`
    until the reader clears it, so the record holding it can be rejected.
    """

    def __init__(self, handle: BinaryIO, *, offset: int, line: int) -> None:
        handle.seek(offset)
        self._handle = handle
        self.offset = offset
        self.line = line
        self.undecodable = False

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.offset += len(raw)
            self.line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable = True
                text = raw.decode("utf-8", errors="replace")
            yield text.removeprefix("\ufeff") if self.line == 1 else text
