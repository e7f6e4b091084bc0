"""One line of a catalog file to an `Item` or a `Rejection`: renamed by the mapping, given the
defaults, its messy price and stock text cleaned (`retrieval.cleaning`), and validated.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from retrieval.cleaning import clean
from retrieval.ingest.source import ITEM_FIELDS, IngestSource, Lines, SourceFormat
from store.schemas import Item


@dataclass(frozen=True)
class Rejection:
    """A record that was not ingested: the line it starts on, why, and what it held.

    `raw` is the line's text for JSONL, and for CSV the row as column → value (or the list of
    values when their count does not match the header; None when the row could not be parsed).
    """

    line: int
    reason: str
    raw: Any


def read_records(source: IngestSource, lines: Lines) -> Iterator[Item | Rejection]:
    """The records from where `lines` stands, each an Item or a Rejection. When one is yielded,
    `lines` stands right after it: neither reader reads ahead."""
    if source.format is SourceFormat.jsonl:
        yield from _jsonl_records(lines, source)
    else:
        yield from _csv_records(lines, source)


def _jsonl_records(lines: Lines, source: IngestSource) -> Iterator[Item | Rejection]:
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


def _csv_records(lines: Lines, source: IngestSource) -> Iterator[Item | Rejection]:
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


def reason_kind(reason: str) -> str:
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
