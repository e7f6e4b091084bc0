"""Catalog ingest from JSONL or CSV files at scale: streamed, mapped, validated, resumable.

A file is read line by line, never whole. Each record is renamed by the field mapping, given
the defaults for fields it lacks, its messy price and stock text cleaned (`retrieval.cleaning`),
checked against the `Item` model, and the valid ones are upserted through `ingest_items` one batch at a
time; a record that fails goes, with its line number and the reason, to `FILE.rejects.jsonl`.
After every committed batch a checkpoint records how far the file was read, so a run that was
interrupted continues from there when started again on the same, unchanged file. A CSV file
without a header row names its columns by number (1, 2, ...) or by the names given for them.
At the end, the report warns when the stored catalog would hide most of itself from decisions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from pydantic import ValidationError

from retrieval.catalog import ingest_items
from retrieval.cleaning import clean
from retrieval.coverage import coverage_warnings
from retrieval.embedder import Embedder
from retrieval.index import RetrievalError, VectorIndex
from store.catalog import catalog_coverage
from store.db import Database
from store.schemas import Item

log = logging.getLogger("attune.ingest")

ITEM_FIELDS: tuple[str, ...] = tuple(Item.model_fields)
BATCH = 512
REPORTED_REJECTIONS = 100
"""How many rejections a report keeps in memory; the rejects file holds all of them."""


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


@dataclass(frozen=True)
class Rejection:
    """A record that was not ingested: the line it starts on, why, and what it held.

    `raw` is the line's text for JSONL, and for CSV the row as column → value (or the list of
    values when their count does not match the header; None when the row could not be parsed).
    """

    line: int
    reason: str
    raw: Any


@dataclass(frozen=True)
class IngestProgress:
    """Where a run stands: reported at the start and after every committed batch."""

    offset: int
    size: int
    line: int
    batches: int
    ingested: int
    rejected: int


@dataclass(frozen=True)
class IngestReport:
    """What one run did. `ingested` and `rejected` count this run; `*_total` the whole file,
    including the part committed before `resumed_from_line` (0 when the run started afresh)."""

    path: Path
    rejects_path: Path
    ingested: int
    rejected: int
    lines: int
    seconds: float
    resumed_from_line: int
    ingested_total: int
    rejected_total: int
    rejections: tuple[Rejection, ...]
    ignored_columns: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def items_per_s(self) -> float:
        return round(self.ingested / self.seconds, 1) if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, int | float | list[str]]:
        return {
            "ingested": self.ingested,
            "rejected": self.rejected,
            "lines": self.lines,
            "seconds": round(self.seconds, 3),
            "items_per_s": self.items_per_s,
            "resumed_from_line": self.resumed_from_line,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Checkpoint:
    """How far a file was ingested, saved after every committed batch. The counts are totals
    up to `offset`; `rejects_size` is the rejects file's size at that point."""

    path: str
    size: int
    mtime_ns: int
    fingerprint: str
    offset: int
    line: int
    ingested: int
    rejected: int
    rejects_size: int


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
            lines = _Lines(handle, offset=0, line=0)
            names = _csv_header(path, lines, header=header and not columns, columns=columns)
            if not header or columns:
                lines = _Lines(handle, offset=0, line=0)  # the first row is a record
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
    path: Path, lines: _Lines, *, header: bool, columns: tuple[str, ...]
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


def checkpoint_path(checkpoints: Path, file: Path) -> Path:
    """The checkpoint of `file`: named by the SHA-256 of its absolute path."""
    digest = hashlib.sha256(str(Path(file).absolute()).encode()).hexdigest()
    return checkpoints / f"{digest}.json"


def ingest_file(
    db: Database,
    embedder: Embedder,
    index: VectorIndex,
    source: IngestSource,
    *,
    checkpoints: Path,
    batch: int = BATCH,
    resume: bool = True,
    progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Ingests the valid records of `source`, `batch` records per committed batch.

    With `resume`, a checkpoint in `checkpoints` for the same file, size, mtime, format and
    mapping is continued from; a file already ingested to its end is then not read again.
    Within a batch the last record of an item_id wins. An exception raised by `progress`
    (called after each checkpoint) stops the run, which can then be resumed.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    started = time.perf_counter()
    checkpoints.mkdir(parents=True, exist_ok=True)
    where = checkpoint_path(checkpoints, source.path)
    saved = _matching_checkpoint(where, source) if resume else None
    if saved is None:
        where.unlink(missing_ok=True)
        source.rejects_path.unlink(missing_ok=True)
        start = Checkpoint(
            path=str(source.path),
            size=source.size,
            mtime_ns=source.mtime_ns,
            fingerprint=source.fingerprint,
            offset=source.body_offset,
            line=source.body_line,
            ingested=0,
            rejected=0,
            rejects_size=0,
        )
    else:
        # Rejections written after the last checkpoint are written again by this run.
        if source.rejects_path.exists() and source.rejects_path.stat().st_size > saved.rejects_size:
            os.truncate(source.rejects_path, saved.rejects_size)
        start = saved
    run = _Run(db, embedder, index, source, where, start, progress)
    try:
        handle = source.path.open("rb")
    except OSError as err:
        raise IngestError(f"cannot read {source.path}: {err.strerror}") from err
    with handle:
        lines = _Lines(handle, offset=start.offset, line=start.line)
        for result in _records(source, lines):
            run.add(result)
            if run.pending >= batch:
                run.commit(lines.offset, lines.line)
        if run.pending or lines.offset != run.state.offset:
            run.commit(lines.offset, lines.line)
    with db.session() as session:
        coverage = catalog_coverage(session)
    records = run.state.ingested + run.state.rejected
    warnings = coverage_warnings(
        coverage, records=records, rejected=run.state.rejected, reasons=run.reasons
    )
    return IngestReport(
        path=source.path,
        rejects_path=source.rejects_path,
        ingested=run.state.ingested - start.ingested,
        rejected=run.state.rejected - start.rejected,
        lines=run.state.line,
        seconds=time.perf_counter() - started,
        resumed_from_line=0 if saved is None else saved.line,
        ingested_total=run.state.ingested,
        rejected_total=run.state.rejected,
        rejections=tuple(run.kept),
        ignored_columns=source.ignored_columns,
        warnings=tuple(warnings),
    )


def _matching_checkpoint(where: Path, source: IngestSource) -> Checkpoint | None:
    try:
        saved = Checkpoint(**json.loads(where.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise IngestError(
            f"the checkpoint {where} is unreadable ({err}); start over with --restart"
        ) from err
    current = (str(source.path), source.size, source.mtime_ns, source.fingerprint)
    if (saved.path, saved.size, saved.mtime_ns, saved.fingerprint) != current:
        log.info("%s changed since its checkpoint, or its mapping did: starting over", source.path)
        return None
    return saved


class _Run:
    """One run's open batch and what it has committed so far."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        index: VectorIndex,
        source: IngestSource,
        where: Path,
        start: Checkpoint,
        progress: Callable[[IngestProgress], None] | None,
    ) -> None:
        self.db, self.embedder, self.index = db, embedder, index
        self.source, self.where, self.state, self.progress = source, where, start, progress
        self.items: list[Item] = []
        self.rejections: list[Rejection] = []
        self.kept: list[Rejection] = []
        self.reasons: Counter[str] = Counter()
        self.batches = 0
        self._report()

    @property
    def pending(self) -> int:
        return len(self.items) + len(self.rejections)

    def add(self, result: Item | Rejection) -> None:
        if isinstance(result, Item):
            self.items.append(result)
        else:
            self.rejections.append(result)

    def commit(self, offset: int, line: int) -> None:
        """Upserts the batch, appends its rejections to the rejects file, then checkpoints."""
        unique = list({item.item_id: item for item in self.items}.values())
        written = ingest_items(
            self.db, self.embedder, self.index, unique, batch=max(len(unique), 1)
        )
        rejects_size = self.state.rejects_size
        self.reasons.update(_reason_kind(r.reason) for r in self.rejections)
        if self.rejections:
            with self.source.rejects_path.open("a", encoding="utf-8") as out:
                for rejection in self.rejections:
                    out.write(json.dumps(asdict(rejection), ensure_ascii=False) + "\n")
                rejects_size = out.tell()
            room = REPORTED_REJECTIONS - len(self.kept)
            self.kept.extend(self.rejections[: max(room, 0)])
        self.state = replace(
            self.state,
            offset=offset,
            line=line,
            ingested=self.state.ingested + written,
            rejected=self.state.rejected + len(self.rejections),
            rejects_size=rejects_size,
        )
        temporary = self.where.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self.state)), encoding="utf-8")
        os.replace(temporary, self.where)
        self.items, self.rejections = [], []
        self.batches += 1
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                IngestProgress(
                    offset=self.state.offset,
                    size=self.source.size,
                    line=self.state.line,
                    batches=self.batches,
                    ingested=self.state.ingested,
                    rejected=self.state.rejected,
                )
            )


class _Lines:
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


def _records(source: IngestSource, lines: _Lines) -> Iterator[Item | Rejection]:
    """The records from where `lines` stands, each an Item or a Rejection. When one is yielded,
    `lines` stands right after it: neither reader reads ahead."""
    if source.format is SourceFormat.jsonl:
        yield from _jsonl_records(lines, source)
    else:
        yield from _csv_records(lines, source)


def _jsonl_records(lines: _Lines, source: IngestSource) -> Iterator[Item | Rejection]:
    for text in lines:
        if not text.strip():
            continue
        number, raw = lines.line, text.rstrip("\r\n")
        if lines.undecodable:
            lines.undecodable = False
            yield Rejection(number, "the line is not valid UTF-8", raw)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            yield Rejection(number, f"invalid JSON: {err.msg} at column {err.colno}", raw)
            continue
        if not isinstance(record, dict):
            yield Rejection(number, f"expected a JSON object, got {type(record).__name__}", raw)
            continue
        yield _validate(number, _rename(record, source.mapping), source, raw)


def _csv_records(lines: _Lines, source: IngestSource) -> Iterator[Item | Rejection]:
    header, width = source.header, len(source.header)
    kept = [i for i, column in enumerate(header) if column not in source.ignored_columns]
    reader = csv.reader(lines)
    while True:
        number = lines.line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield Rejection(number, f"cannot parse the CSV row: {err}", None)
            continue
        if not row:
            continue
        raw: Any = dict(zip(header, row, strict=True)) if len(row) == width else row
        if lines.undecodable:
            lines.undecodable = False
            yield Rejection(number, "the row is not valid UTF-8", raw)
        elif len(row) != width:
            yield Rejection(number, f"the row has {len(row)} values, the header {width}", raw)
        else:
            # An empty cell is a missing value, so the field's default applies.
            cells = {header[i]: row[i] for i in kept if row[i].strip()}
            record = _rename(cells, source.mapping)
            if isinstance(record.get("tags"), str):
                record["tags"] = _split_tags(record["tags"])
            yield _validate(number, record, source, raw)


def _split_tags(value: str) -> list[str]:
    """Tags from one CSV cell: separated by '|' if there is one, else by ','."""
    separator = "|" if "|" in value else ","
    return [tag.strip() for tag in value.split(separator) if tag.strip()]


def _rename(record: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The record with mapped columns renamed to their item fields. A key named like a mapped
    field is replaced by that field's column; a mapped column that is not itself an item field
    is consumed by the renaming."""
    if not mapping:
        return record
    sources = set(mapping.values())
    renamed = {
        key: value
        for key, value in record.items()
        if key not in mapping and (key not in sources or key in ITEM_FIELDS)
    }
    renamed.update({name: record[column] for name, column in mapping.items() if column in record})
    return renamed


def _validate(
    number: int, record: dict[str, Any], source: IngestSource, raw: Any
) -> Item | Rejection:
    try:
        return Item.model_validate(clean({**source.defaults, **record}))
    except ValidationError as err:
        return Rejection(number, _reason(err, source.mapping), raw)


def _reason_kind(reason: str) -> str:
    """A rejection's reason without the values it quotes, to count alike reasons together."""
    return "; ".join(part.split(", got ")[0] for part in reason.split("; "))


def _reason(error: ValidationError, mapping: Mapping[str, str]) -> str:
    """Every field problem of a record, e.g. "price (column 'unit_price'): Input should be
    greater than 0, got '-3'"."""
    parts = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "record"
        name = str(detail["loc"][0]) if detail["loc"] else ""
        where = f"{location} (column {mapping[name]!r})" if name in mapping else location
        if detail["type"] == "extra_forbidden":
            parts.append(f"{where}: not an item field; item fields are {', '.join(ITEM_FIELDS)}")
        elif detail["type"] == "missing":
            parts.append(f"{where}: {detail['msg']}")
        else:
            got = repr(detail["input"])
            got = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"{where}: {detail['msg']}, got {got}")
    return "; ".join(parts)
