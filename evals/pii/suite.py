"""The `pii` suite kind: how much of the PII in shoppers' messages the PII guard finds.

The datasets are read by `evals.pii.datasets`, the systems are in `evals.pii.systems`, and the
matching rule is `evals.pii.scoring`'s.

Rows: one per dataset and entity type, `system` = `<system name>/<TYPE>` (the runner wants one
row per system and dataset), plus `<system name>/ALL` (micro-averaged) and, on a known-values
dataset, `<system name>/KNOWN_VALUES`.

"""

from __future__ import annotations

from typing import Any

from evals.base import (
    DatasetSpec,
    Plot,
    Row,
    RunContext,
    SuiteError,
    SuiteResult,
    register,
)
from evals.pii.datasets import LEGACY_TYPES, TYPES, Example, load_conll, load_labeled, load_users
from evals.pii.scoring import (
    MAX_ERRORS_SHOWN,
    LabeledScore,
    Tally,
    ratio,
    score_known_values,
    score_labeled,
)
from evals.pii.systems import STOCK_MODEL, Finder, StockPresidio
from policies.pii import PIIGuard
from policies.pii.entities import ENTITY_TYPES
from policies.pii.ner import FALLBACK_MODELS
from store.schemas import UserRecord

DATASET_KINDS = ("labeled", "known-values", "conll")
SYSTEM_TYPES = ("guard", "presidio")


@register("pii")
def run_pii(ctx: RunContext) -> SuiteResult:
    systems = ctx.suite.systems
    if not systems:
        raise SuiteError("systems: add one, e.g. {name: presidio-offline, type: guard}")
    for index, system in enumerate(systems):
        if system.type not in SYSTEM_TYPES:
            raise SuiteError(
                f"systems[{index}].type: unknown type {system.type!r}; use one of {SYSTEM_TYPES}"
            )
    datasets = [(spec, _dataset_kind(index, spec)) for index, spec in enumerate(ctx.suite.datasets)]
    rows: list[Row] = []
    details: dict[str, Any] = {"datasets": {}, "systems": {}}
    tables: dict[str, list[dict[str, Any]]] = {}
    labeled: dict[str, list[Example]] = {}
    types: dict[str, tuple[str, ...]] = {}
    users: dict[str, list[UserRecord]] = {}
    notes: list[str] = []
    for index, (spec, kind) in enumerate(datasets):
        path = ctx.dataset_path(spec)
        if kind == "labeled":
            labeled[spec.name] = load_labeled(path, spec.params.get("part"))
            types[spec.name] = _dataset_types(index, spec)
        elif kind == "conll":
            if not path.is_file():
                notes.append(
                    f"Dataset {spec.name} was skipped: {path} is absent (it is read from the "
                    "shared data folder, ATTUNE_DATA_DIR, and never copied into the project)."
                )
                continue
            mapping = {str(k): str(v) for k, v in spec.params.get("labels", {}).items()}
            if not mapping or not set(mapping.values()) <= set(TYPES):
                raise SuiteError(
                    f"datasets[{index}].params.labels: map the file's tags to types of "
                    f"{', '.join(TYPES)}, e.g. {{person: PERSON, location: LOCATION}}"
                )
            labeled[spec.name] = load_conll(path, mapping)
            types[spec.name] = tuple(dict.fromkeys(mapping.values()))
        else:
            users[spec.name] = load_users(path)
        size = len(labeled.get(spec.name, users.get(spec.name, [])))
        details["datasets"][spec.name] = {"kind": kind, "examples": size}
    datasets = [
        (spec, kind) for spec, kind in datasets if spec.name in labeled or spec.name in users
    ]
    steps = sum(map(len, labeled.values())) + sum(map(len, users.values()))
    ctx.set_total(len(systems) * steps)
    for system in systems:
        guard: Finder
        threshold = float(system.params.get("score_threshold", 0.4))
        if system.type == "presidio":
            model = str(system.params.get("spacy_model", STOCK_MODEL))
            guard = StockPresidio(model, threshold)
        else:
            guard = PIIGuard(
                spacy_model=str(system.params.get("spacy_model", "en_core_web_lg")),
                score_threshold=threshold,
                redact=ENTITY_TYPES,
                fallback_models=FALLBACK_MODELS if system.params.get("ner", True) else (),
            )
        details["systems"][system.name] = {"mode": guard.mode, "degraded": guard.degraded}
        for spec, _ in datasets:
            if spec.name in labeled:
                score = score_labeled(guard, labeled[spec.name], ctx.progress, types[spec.name])
                rows += _labeled_rows(spec.name, system.name, score)
                if score.errors and spec.params.get("kind") != "conll":
                    shown = score.errors[:MAX_ERRORS_SHOWN]
                    tables[f"errors on {spec.name} ({system.name})"] = shown
            elif isinstance(guard, PIIGuard):
                metrics = score_known_values(guard, users[spec.name], ctx.suite.seed, ctx.progress)
                rows.append(Row(spec.name, f"{system.name}/KNOWN_VALUES", metrics))
    return SuiteResult(
        rows=rows,
        plots=[_recall_plot(rows)],
        notes=[
            "Matching: a predicted span is a true positive when it overlaps a gold span of the"
            " same type; a gold span is found when a prediction of its type overlaps it."
            " `exact_*` metrics ask for the same offsets. `redacted_recall` counts gold spans"
            " covered completely by findings of any type.",
            "Guard modes: "
            + "; ".join(
                f"{name}: {info['mode']}" + (f" ({info['degraded']})" if info["degraded"] else "")
                for name, info in details["systems"].items()
            ),
            "The labeled sets of data/pii are synthetic (build.py, build_intl.py): their names,"
            " emails, phones, cards and IBANs are generated, so their error tables show no real"
            " person's data. WNUT17 (Derczynski et al., W-NUT 2017, CC BY 4.0) is real posts:"
            " its error tables are left out of the report.",
            *notes,
        ],
        tables=tables,
        details=details,
    )


def _dataset_types(index: int, spec: DatasetSpec) -> tuple[str, ...]:
    value = spec.params.get("types", list(LEGACY_TYPES))
    if value == "all":
        return TYPES
    if not isinstance(value, list) or not value or not set(value) <= set(TYPES):
        raise SuiteError(
            f"datasets[{index}].params.types: a list of types of {', '.join(TYPES)}, or all"
        )
    return tuple(value)


def _dataset_kind(index: int, spec: DatasetSpec) -> str:
    kind = spec.params.get("kind", "labeled")
    if kind not in DATASET_KINDS:
        raise SuiteError(
            f"datasets[{index}].params.kind: unknown kind {kind!r}; use one of {DATASET_KINDS}"
        )
    return str(kind)


def _labeled_rows(dataset: str, system: str, score: LabeledScore) -> list[Row]:
    rows = []
    total = Tally()
    for entity_type, tally in score.tallies.items():
        if not tally.gold and not tally.predicted:
            continue
        rows.append(Row(dataset, f"{system}/{entity_type}", tally.metrics()))
        total.add(tally)
    metrics = total.metrics()
    metrics["redacted_recall"] = ratio(total.covered, total.gold)
    metrics["other_predictions"] = float(score.other_predictions)
    rows.append(Row(dataset, f"{system}/ALL", metrics))
    return rows


def _recall_plot(rows: list[Row]) -> Plot:
    typed = [row for row in rows if row.system.rsplit("/", 1)[-1] in TYPES]
    datasets = list(dict.fromkeys(row.dataset for row in typed))

    def draw(ax: Any) -> None:
        width = 0.8 / max(1, len(datasets))
        for offset, dataset in enumerate(datasets):
            values = {
                row.system.rsplit("/", 1)[-1]: row.metrics["recall"]
                for row in typed
                if row.dataset == dataset
            }
            positions = [i + offset * width for i in range(len(TYPES))]
            ax.bar(positions, [values.get(t, 0.0) for t in TYPES], width, label=dataset)
        ax.set_xticks(
            [i + width * (len(datasets) - 1) / 2 for i in range(len(TYPES))],
            TYPES,
            rotation=20,
            fontsize=8,
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("recall (overlap match)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)

    return Plot(name="recall-by-type", title="Recall per entity type", draw=draw)
