"""Catalog ingest from JSONL or CSV files at scale: streamed, mapped, validated, resumable.

A file is read line by line, never whole. Each record is renamed by the field mapping, given
the defaults for fields it lacks, its messy price and stock text cleaned (`retrieval.cleaning`),
checked against the `Item` model, and the valid ones are upserted through `ingest_items` one batch at a
time; a record that fails goes, with its line number and the reason, to `FILE.rejects.jsonl`.
After every committed batch a checkpoint records how far the file was read, so a run that was
interrupted continues from there when started again on the same, unchanged file. A CSV file
without a header row names its columns by number (1, 2, ...) or by the names given for them.
At the end, the report warns when the stored catalog would hide most of itself from decisions.

The source and its mapping are `retrieval.ingest.source`, a line to an item is
`retrieval.ingest.records`; this module runs the batches, the checkpoints and the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from retrieval.catalog import ingest_items
from retrieval.coverage import coverage_warnings
from retrieval.embedder import Embedder
from retrieval.index import VectorIndex
from retrieval.ingest.records import Rejection, read_records, reason_kind
from retrieval.ingest.source import IngestError, IngestSource, Lines
from store.catalog import catalog_coverage
from store.db import Database
from store.schemas import Item

log = logging.getLogger("attune.ingest")


BATCH = 512
REPORTED_REJECTIONS = 100
"""How many rejections a report keeps in memory; the rejects file holds all of them."""


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
        lines = Lines(handle, offset=start.offset, line=start.line)
        for result in read_records(source, lines):
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
        self.reasons.update(reason_kind(r.reason) for r in self.rejections)
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
