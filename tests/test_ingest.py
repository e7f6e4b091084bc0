"""File ingest at scale: rejects with line numbers, CSV mapping, idempotence, resume, the CLI."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.services import Services
from agents.settings import Settings
from api.cli import app
from retrieval.ingest.run import IngestProgress, IngestReport, checkpoint_path, ingest_file
from retrieval.ingest.source import IngestError, prepare_source, read_mapping
from store.catalog import count_items, get_items
from store.schemas import Channel


def _item(prefix: str, n: int, **overrides: object) -> dict[str, object]:
    return {
        "item_id": f"{prefix}_{n:04d}",
        "title": f"Trail shoe model {n}",
        "description": "Grippy soles for wet rock.",
        "category": "sports",
        "tags": ["running", "outdoor"],
        "price": 20 + n,
        "margin": 0.3,
        "stock": n % 5,
        "min_age": 0,
        **overrides,
    }


def _jsonl(path: Path, records: list[dict[str, object] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One service for the module, as building it takes a second: each test has its own
    files and item ids, and counts what it stored."""
    built = build_services(Settings(home=tmp_path_factory.mktemp("home"), seed=1))
    yield built
    built.close()


def _ingest(
    services: Services,
    path: Path,
    *,
    mapping: dict[str, str] | None = None,
    batch: int = 512,
    resume: bool = True,
    progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    return ingest_file(
        services.db,
        services.embedder,
        services.index,
        prepare_source(path, mapping=mapping),
        checkpoints=services.settings.home / "ingest",
        batch=batch,
        resume=resume,
        progress=progress,
    )


def _stored(services: Services, ids: list[str]) -> tuple[int, int]:
    """How many of `ids` are in the store and in the vector index."""
    with services.db.session() as session:
        return len(get_items(session, ids)), len(services.index.vectors(ids))


def _counts(services: Services) -> tuple[int, int]:
    with services.db.session() as session:
        return count_items(session), services.index.count()


def test_bad_line_is_rejected_with_its_number_and_the_rest_ingested(
    services: Services, tmp_path: Path
) -> None:
    bad = _item("bad", 3, price=-5)
    path = _jsonl(
        tmp_path / "items.jsonl",
        [_item("bad", 1), _item("bad", 2), bad, "{not json", "", _item("bad", 4)],
    )

    report = _ingest(services, path, batch=2)

    assert (report.ingested, report.rejected, report.lines) == (3, 2, 6)
    assert [(r.line, r.reason) for r in report.rejections] == [
        (3, "price: Input should be greater than 0, got -5"),
        (4, "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
    ]
    rejects = [json.loads(line) for line in report.rejects_path.read_text().splitlines()]
    assert [(r["line"], r["raw"]) for r in rejects] == [(3, json.dumps(bad)), (4, "{not json")]
    assert _stored(services, ["bad_0001", "bad_0002", "bad_0003", "bad_0004"]) == (3, 3)


def test_csv_with_a_mapping_converts_tags_and_numbers(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["sku", "name", "category", "unit_price", "margin", "stock", "tags", "x"])
        writer.writerow(["csv1", "Wool scarf", "fashion", "19.90", "0.4", "3", "winter|wool", "?"])
        writer.writerow(["csv2", "Rain jacket", "fashion", "89", "0.3", "", "rain, outdoor", ""])
        writer.writerow(["csv3", "Bad price", "fashion", "cheap", "0.3", "1", "", ""])
    mapping = read_mapping(["item_id=sku", "title=name", "price=unit_price"])

    report = _ingest(services, path, mapping=mapping)

    assert (report.ingested, report.rejected, report.ignored_columns) == (2, 1, ("x",))
    assert report.rejections[0].line == 4
    assert report.rejections[0].reason.startswith("price (column 'unit_price'): Input should be")
    assert report.rejections[0].raw["unit_price"] == "cheap"
    with services.db.session() as session:
        items = get_items(session, ["csv1", "csv2"])
    assert (items["csv1"].price, items["csv1"].stock, items["csv1"].tags) == (
        19.9,
        3,
        ["winter", "wool"],
    )
    # An empty stock cell is unknown stock, which decide treats as available (not 0).
    assert (items["csv2"].stock, items["csv2"].tags) == (None, ["rain", "outdoor"])


def test_second_run_changes_nothing_and_duplicates_in_a_batch_take_the_last(
    services: Services, tmp_path: Path
) -> None:
    records = [_item("dup", 1), _item("dup", 2, title="first"), _item("dup", 3)]
    path = _jsonl(tmp_path / "items.jsonl", [*records, _item("dup", 2, title="last")])

    first = _ingest(services, path)
    after_first = _counts(services)
    again = _ingest(services, path)
    restarted = _ingest(services, path, resume=False)

    assert (first.ingested, first.resumed_from_line) == (3, 0)
    assert (again.ingested, again.resumed_from_line, again.ingested_total) == (0, 4, 3)
    assert restarted.ingested == 3
    assert _counts(services) == after_first
    with services.db.session() as session:
        assert get_items(session, ["dup_0002"])["dup_0002"].title == "last"


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_the_checkpoint(services: Services, tmp_path: Path) -> None:
    records: list[dict[str, object] | str] = [_item("cut", n) for n in range(1, 11)]
    records[6] = _item("cut", 7, category="")
    path = _jsonl(tmp_path / "items.jsonl", records)
    before = _counts(services)

    def stop_after_two_batches(step: IngestProgress) -> None:
        if step.batches == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _ingest(services, path, batch=3, progress=stop_after_two_batches)
    saved = json.loads(checkpoint_path(services.settings.home / "ingest", path).read_text())
    assert (saved["line"], saved["ingested"]) == (6, 6)

    report = _ingest(services, path, batch=3)

    assert (report.resumed_from_line, report.ingested, report.rejected) == (6, 3, 1)
    assert (report.ingested_total, report.lines) == (9, 10)
    after = _counts(services)
    assert (after[0] - before[0], after[1] - before[1]) == (9, 9)
    assert len(report.rejects_path.read_text().splitlines()) == 1


def test_changed_file_starts_over(services: Services, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "items.jsonl", [_item("chg", 1)])
    _ingest(services, path)
    _jsonl(path, [_item("chg", 1), _item("chg", 2)])

    report = _ingest(services, path)

    assert (report.resumed_from_line, report.ingested) == (0, 2)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["title"], "is not FIELD=COLUMN"),
        (["name=title"], "'name', which items do not have"),
        (["title=a", "title=b"], "gives 'title' twice"),
    ],
)
def test_bad_mapping_is_named(pairs: list[str], message: str) -> None:
    with pytest.raises(IngestError, match=message):
        read_mapping(pairs)


def test_mapping_file_with_a_pair_overriding_it(tmp_path: Path) -> None:
    file = tmp_path / "mapping.yaml"
    file.write_text("title: name\nprice: unit_price\n", encoding="utf-8")

    assert read_mapping(["price=cost"], file) == {"title": "name", "price": "cost"}


def test_mapping_file_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    file = tmp_path / "mapping.yaml"
    file.write_text("- title\n- name\n", encoding="utf-8")

    with pytest.raises(IngestError, match="must map item fields to source column names"):
        read_mapping(file=file)


def test_mapped_column_missing_from_the_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\n", encoding="utf-8")
    with pytest.raises(IngestError, match="column 'name', which is not in the header"):
        prepare_source(path, mapping={"title": "name"})


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTUNE_SEED", "1")
    return tmp_path


def test_cli_prints_the_summary_and_exits_0_with_rejects(cli_home: Path) -> None:
    path = _jsonl(
        cli_home / "items.jsonl", [_item("cli", 1), _item("cli", 2, margin=2), _item("cli", 3)]
    )

    result = CliRunner().invoke(app, ["ingest", "items", str(path), "--batch", "2"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "ingested",
        "rejected",
        "lines",
        "seconds",
        "items_per_s",
        "resumed_from_line",
        "warnings",
    }
    assert (summary["ingested"], summary["rejected"], summary["lines"]) == (2, 1, 3)
    assert f"{path}:2: margin: Input should be less than or equal to 1, got 2" in result.stderr


def test_cli_exits_1_when_nothing_is_valid(cli_home: Path) -> None:
    path = _jsonl(cli_home / "items.jsonl", [_item("cli", 1, price=0)])

    result = CliRunner().invoke(app, ["ingest", "items", str(path)])

    assert result.exit_code == 1
    assert "no valid item" in result.stderr


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("items.txt", [], "cannot tell the format of items.txt"),
        ("items.jsonl", ["--format", "xml"], "unknown format 'xml'"),
        ("items.jsonl", ["--map", "colour=c"], "'colour', which items do not have"),
    ],
)
def test_cli_exits_2_on_an_unusable_file_or_mapping(
    cli_home: Path, name: str, options: list[str], message: str
) -> None:
    path = _jsonl(cli_home / name, [_item("cli", 1)])

    result = CliRunner().invoke(app, ["ingest", "items", str(path), *options])

    assert result.exit_code == 2
    assert message in result.stderr


def test_headerless_csv_takes_columns_by_number_and_defaults_the_rest(
    cli_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real catalog's shape: no header, prices with symbols and ranges, stock as text or
    missing, no category, margin or currency. Every row is stored, and decide returns them
    (before, every row was rejected for lacking category and margin, and a missing stock
    column stored every item as out of stock)."""
    monkeypatch.setenv("ATTUNE_CURRENCY", "GBP")
    path = cli_home / "products.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["hl1", "Wooden train set", "Hornby", "£3.99 - £5.99", "5\xa0new"])
        writer.writerow(["hl2", "Puzzle, 1000 pieces", "Ravensburger", "1,299.00", ""])
        writer.writerow(["hl3", "Kite", "", "12", "In stock"])
    options = ["--no-header", "--map", "item_id=1", "--map", "title=2", "--map", "price=4"]
    options += ["--map", "stock=5"]

    result = CliRunner().invoke(app, ["ingest", "items", str(path), *options])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ingested"], summary["rejected"]) == (3, 0)
    assert "ignoring columns that are not item fields: '3'" in result.stderr
    services = build_services(Settings())
    try:
        with services.db.session() as session:
            items = get_items(session, ["hl1", "hl2", "hl3"])
        assert [
            (i.price, i.stock, i.category, i.margin, i.currency, i.description)
            for i in (items["hl1"], items["hl2"], items["hl3"])
        ] == [
            (3.99, 5, "uncategorised", None, "GBP", ""),
            (1299.0, None, "uncategorised", None, "GBP", ""),
            (12.0, None, "uncategorised", None, "GBP", ""),
        ]
        decision = decide(services, DecideRequest(channel=Channel.web, anonymous_id="a_hl"))
    finally:
        services.close()
    assert {item.item_id for item in decision.items} == {"hl1", "hl2", "hl3"}


def test_columns_name_a_headerless_file_and_unknown_columns_are_named(cli_home: Path) -> None:
    path = cli_home / "products.csv"
    path.write_text("c1,Yo-yo,2.50\n", encoding="utf-8")

    named = prepare_source(path, columns=["sku", "title", "price"], mapping={"item_id": "sku"})
    numbered = prepare_source(path, header=False, mapping={"item_id": "1"})

    assert (named.header, named.body_offset) == (("sku", "title", "price"), 0)
    assert (numbered.header, numbered.ignored_columns) == (("1", "2", "3"), ("2", "3"))
    with pytest.raises(IngestError, match=r"column '4', which is not in the columns .*1, 2, 3"):
        prepare_source(path, header=False, mapping={"title": "4"})


@pytest.mark.parametrize(
    "price, stock, expected",
    [
        ("£3.99", "2 new", (3.99, 2)),
        ("$1,299.50 - $1,500", "sold out", (1299.5, 0)),
        ("EUR 7", "Available", (7.0, None)),
    ],
)
def test_messy_price_and_stock_cells_are_read(
    services: Services, tmp_path: Path, price: str, stock: str, expected: tuple[object, ...]
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(f'item_id,title,price,stock\nmsy1,Ball,"{price}",{stock}\n', encoding="utf-8")

    report = _ingest(services, path)

    assert report.ingested == 1, report.rejections
    with services.db.session() as session:
        item = get_items(session, ["msy1"])["msy1"]
    assert (item.price, item.stock) == expected


@pytest.mark.parametrize("price", ["3,99", "cheap", "-3"])
def test_prices_that_cannot_be_read_safely_are_rejected(
    services: Services, tmp_path: Path, price: str
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(f'item_id,title,price\nbadp,Ball,"{price}"\n', encoding="utf-8")

    report = _ingest(services, path)

    assert report.rejected == 1
    assert report.rejections[0].reason.startswith("price: Input should be")


def test_a_mostly_out_of_stock_catalog_is_warned_about(tmp_path: Path) -> None:
    built = build_services(Settings(home=tmp_path / "home", seed=1))
    records: list[dict[str, object] | str] = [
        _item("oos", n, stock=0 if n < 8 else 3, category=f"c{n % 3}") for n in range(10)
    ]
    path = _jsonl(tmp_path / "items.jsonl", records)
    try:
        report = _ingest(built, path)
    finally:
        built.close()

    assert report.warnings == (
        "8 of 10 stored items (80%) have stock 0 and are never recommended; map a stock "
        "column, or leave it out (unknown stock counts as available)",
    )
    assert report.summary()["warnings"] == list(report.warnings)


def test_a_mostly_rejected_file_and_a_single_category_are_warned_about(
    cli_home: Path,
) -> None:
    records: list[dict[str, object] | str] = [
        {"item_id": f"np{n}", "title": "Thing"} for n in range(3)
    ]
    path = _jsonl(
        cli_home / "items.jsonl",
        [
            *records,
            {"item_id": "p1", "title": "A", "price": 1},
            {"item_id": "p2", "title": "B", "price": 2},
        ],
    )

    result = CliRunner().invoke(app, ["ingest", "items", str(path)])

    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        "3 of 5 records (60%) were rejected; the most common reason (3): price: Field required",
        "all 2 stored items are in one category: taste, segments and offers cannot tell them "
        "apart; map a category column",
    ]
    assert all(f"warning: {warning}" in result.stderr for warning in warnings)
