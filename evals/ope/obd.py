"""The Open Bandit Dataset (OBD): its logs and features, and the production BTS policy.

Layout (Saito et al., "Open Bandit Dataset and Pipeline", NeurIPS 2021 Datasets and Benchmarks)::

    <root>/<policy>/<campaign>/<campaign>.csv       policy: random | bts; campaign: all | men | women
    <root>/<policy>/<campaign>/item_context.csv
    <root>/prior_bts.yaml                           the production BTS policy's Beta prior

Features follow the pipeline's `OpenBanditDataset`: the context of a round is the one-hot user
features (first category of each column dropped, as `pd.get_dummies(drop_first=True)`), to which
the user-item affinity columns can be added; an item's features are its `item_feature_<i>`
columns, hashed categories label-encoded (obp's `action_context`, which leaves the item id out).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
# Slates are drawn from a numpy Generator, or from a legacy RandomState to replay obp's draws.
Random = np.random.Generator | np.random.RandomState

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
CONTEXT_PARTS = ("user", "affinity")

_REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score")
_AFFINITY = re.compile(r"^user-item_affinity_(\d+)$")
_USER = re.compile(r"^user_feature_(\d+)$")


class OBDFormatError(ValueError):
    """Files that are not in the Open Bandit Dataset format; the message names the file and fix."""


@dataclass(frozen=True)
class OBDLog:
    """One policy's log on one campaign, rows in time order, positions counted from 0."""

    policy: str
    campaign: str
    actions: IntArray  # item ids, (n,)
    positions: IntArray  # 0-based, (n,)
    rewards: FloatArray  # clicks, (n,)
    pscore: FloatArray  # the logging policy's P(item at position), (n,)
    user_features: FloatArray  # one-hot, (n, d_user)
    affinity: FloatArray  # user-item affinity, (n, n_affinity)
    item_features: FloatArray  # (n_items, d_item), row = item id

    @property
    def n_rounds(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.item_features.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.positions.max()) + 1

    def context(self, parts: Sequence[str] = ("user",)) -> FloatArray:
        """The context features of each round: "user" (one-hot) and/or "affinity" columns."""
        unknown = [part for part in parts if part not in CONTEXT_PARTS]
        if unknown or not parts:
            raise OBDFormatError(f"context parts must be a non-empty subset of {CONTEXT_PARTS}")
        blocks = {"user": self.user_features, "affinity": self.affinity}
        return np.hstack([blocks[part] for part in parts])


def load_obd(root: Path, policy: str, campaign: str) -> OBDLog:
    """Read `<root>/<policy>/<campaign>/` into an `OBDLog`."""
    if policy not in POLICIES:
        raise OBDFormatError(f"policy must be one of {POLICIES}, got {policy!r}")
    if campaign not in CAMPAIGNS:
        raise OBDFormatError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    folder = Path(root) / policy / campaign
    log_file = folder / f"{campaign}.csv"
    header, columns = _read_csv(log_file)
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise OBDFormatError(f"{log_file} lacks the columns {missing}")
    user_names = sorted((n for n in header if _USER.match(n)), key=_suffix)
    affinity_names = sorted((n for n in header if _AFFINITY.match(n)), key=_suffix)
    if not user_names:
        raise OBDFormatError(f"{log_file} has no user_feature_<i> columns")

    order = np.argsort(np.array(columns["timestamp"]), kind="stable")
    actions = _numbers(columns, "item_id", log_file, np.int64)[order]
    raw_positions = _numbers(columns, "position", log_file, np.int64)[order]
    # Positions are numbered 1..3 in the files; dense ranks from 0 index the position axis.
    positions = np.unique(raw_positions, return_inverse=True)[1].astype(np.int64)
    rewards = _numbers(columns, "click", log_file, np.float64)[order]
    pscore = _numbers(columns, "propensity_score", log_file, np.float64)[order]
    user = np.hstack([_one_hot_drop_first(columns[name]) for name in user_names])[order]
    if affinity_names:
        affinity = np.column_stack(
            [_numbers(columns, name, log_file, np.float64) for name in affinity_names]
        )[order]
    else:
        affinity = np.zeros((actions.shape[0], 0))

    item_features = _item_features(folder / "item_context.csv")
    if actions.min() < 0 or actions.max() >= item_features.shape[0]:
        raise OBDFormatError(
            f"{log_file} names items up to {actions.max()}, but item_context.csv describes "
            f"{item_features.shape[0]} items (ids 0..{item_features.shape[0] - 1})"
        )
    return OBDLog(
        policy=policy,
        campaign=campaign,
        actions=actions,
        positions=positions,
        rewards=rewards,
        pscore=pscore,
        user_features=user,
        affinity=affinity,
        item_features=item_features,
    )


def read_bts_prior(path: Path, campaign: str) -> tuple[FloatArray, FloatArray]:
    """The production BTS policy's Beta prior (alpha, beta) per item for a campaign."""
    if not Path(path).is_file():
        raise OBDFormatError(f"no BTS prior at {path}; it is obp's obp/policy/conf/prior_bts.yaml")
    prior = yaml.safe_load(Path(path).read_text())
    try:
        alpha = np.asarray(prior[campaign]["alpha"], dtype=np.float64)
        beta = np.asarray(prior[campaign]["beta"], dtype=np.float64)
    except (KeyError, TypeError) as error:
        raise OBDFormatError(f"{path} has no alpha/beta lists for campaign {campaign!r}") from error
    if alpha.shape != beta.shape or alpha.ndim != 1 or np.any(alpha <= 0) or np.any(beta <= 0):
        raise OBDFormatError(
            f"{path}: alpha and beta of {campaign!r} must be positive, same length"
        )
    return alpha, beta


def sample_bts_slates(
    alpha: FloatArray, beta: FloatArray, n_positions: int, size: int, rng: Random
) -> IntArray:
    """`size` slates of Bernoulli Thompson sampling: (size, n_positions) item ids, best first.

    Each slate draws a click rate for every item from its Beta(alpha, beta), ranks the items by
    the draws and shows the top `n_positions` (obp's `BernoulliTS.select_action` without updates).
    """
    n_items = alpha.shape[0]
    if not 1 <= n_positions <= n_items:
        raise OBDFormatError(f"n_positions must lie in [1, {n_items}], got {n_positions}")
    draws = rng.beta(alpha, beta, size=(size, n_items))
    # Partitioning on the first n_positions ranks yields the top items already in order.
    return np.argpartition(-draws, np.arange(n_positions), axis=1)[:, :n_positions]


def bts_action_dist(
    alpha: FloatArray,
    beta: FloatArray,
    n_positions: int = 3,
    n_sim: int = 100_000,
    rng: Random | None = None,
    chunk: int = 50_000,
) -> FloatArray:
    """P(item at position) of Bernoulli Thompson sampling with a Beta(alpha, beta) per item.

    The counts of each item at each position over `n_sim` simulated slates (`sample_bts_slates`)
    estimate the (n_items, n_positions) distribution; each column sums to 1. This is what obp's
    `BernoulliTS(is_zozotown_prior=True, campaign=...).compute_batch_action_dist(n_sim=...)`
    computes, vectorized. `rng` defaults to `np.random.default_rng(0)`; a legacy
    `np.random.RandomState(seed)` draws the same numbers as obp's policy with `random_state=seed`.
    """
    if n_sim < 1 or chunk < 1:
        raise OBDFormatError(f"n_sim and chunk must be positive, got {n_sim} and {chunk}")
    rng = np.random.default_rng(0) if rng is None else rng
    n_items = alpha.shape[0]
    counts = np.zeros((n_items, n_positions), dtype=np.int64)
    for start in range(0, n_sim, chunk):
        slates = sample_bts_slates(alpha, beta, n_positions, min(chunk, n_sim - start), rng)
        for k in range(n_positions):
            counts[:, k] += np.bincount(slates[:, k], minlength=n_items)
    return counts / n_sim


def _read_csv(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    if not path.is_file():
        raise OBDFormatError(
            f"no file {path}: an Open Bandit Dataset folder holds "
            "<policy>/<campaign>/<campaign>.csv and item_context.csv (set ATTUNE_DATA_DIR or the "
            "suite's dataset path to the folder that holds random/ and bts/)"
        )
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise OBDFormatError(f"{path} is empty") from None
        rows = list(reader)
    if not rows:
        raise OBDFormatError(f"{path} has a header but no rows")
    if any(len(row) != len(header) for row in rows):
        raise OBDFormatError(f"{path} has rows whose length differs from the header's")
    return header, {name: [row[i] for row in rows] for i, name in enumerate(header) if name}


def _numbers(columns: dict[str, list[str]], name: str, path: Path, dtype: type) -> NDArray:
    try:
        return np.array([float(value) for value in columns[name]]).astype(dtype)
    except ValueError as error:
        raise OBDFormatError(f"{path}: column {name!r} must be numeric ({error})") from None


def _suffix(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _one_hot_drop_first(values: list[str]) -> FloatArray:
    categories, codes = np.unique(np.array(values), return_inverse=True)
    return np.eye(len(categories))[codes][:, 1:]


def _item_features(path: Path) -> FloatArray:
    header, columns = _read_csv(path)
    if "item_id" not in columns:
        raise OBDFormatError(f"{path} lacks the item_id column")
    ids = _numbers(columns, "item_id", path, np.int64)
    if sorted(ids.tolist()) != list(range(ids.shape[0])):
        raise OBDFormatError(f"{path}: item_id must be 0..{ids.shape[0] - 1}, each once")
    features = []
    for name in [n for n in header if n.startswith("item_feature_")]:
        try:
            features.append(np.array([float(v) for v in columns[name]]))
        except ValueError:
            # Hashed categories: label-encoded (sorted category index), as obp's LabelEncoder.
            features.append(np.unique(np.array(columns[name]), return_inverse=True)[1] * 1.0)
    if not features:
        raise OBDFormatError(f"{path} has no item_feature_<i> columns")
    return np.column_stack(features)[np.argsort(ids)]
