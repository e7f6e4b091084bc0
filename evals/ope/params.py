"""The `ope-obd` suite's parameters (`OBDParams`): bootstrap runs, the reward model, the best-of table."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardModelParams(_Strict):
    """The reward model of DM and the DR family; the defaults are obp's example."""

    type: Literal["logistic_regression"] = "logistic_regression"
    C: float = Field(100.0, gt=0)
    max_iter: int = Field(10_000, ge=1)
    folds: int = Field(3, ge=1, description="cross-fitting folds; 1 fits and predicts on all")
    context: list[Literal["user", "affinity"]] = Field(["user"], min_length=1)
    action_features: Literal["item_context", "one_hot"] = "item_context"
    per_position: bool = True


class BestOf(_Strict):
    """An extra row: the lowest mean relative error among `systems` (a gate on 'A or B')."""

    name: str = Field(min_length=1)
    systems: list[str] = Field(min_length=1)


class OBDParams(_Strict):
    n_bootstrap: int = Field(30, ge=1)
    n_sim: int = Field(1_000_000, ge=1, description="Monte Carlo draws for BTS's distribution")
    behavior_policy: Literal["random", "bts"] = "random"
    evaluation_policy: Literal["bts", "random"] = "bts"
    prior: str = Field("prior_bts.yaml", description="BTS prior, relative to the dataset path")
    rng: Literal["numpy", "obp"] = Field(
        "numpy",
        description="numpy: Generator streams spawned from the suite's seed. obp: the legacy "
        "streams of obp's example, run b resampling with RandomState(b) and BTS simulated with "
        "RandomState(seed), so that seed 12345 replays the published experiment's draws.",
    )
    reward_model: RewardModelParams = Field(
        default_factory=lambda: RewardModelParams.model_validate({})
    )
    best_of: BestOf | None = None
