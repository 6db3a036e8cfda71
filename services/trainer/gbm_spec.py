"""The ``lightgbm`` block of a model spec with ``flavour: lightgbm``: a gradient-boosted trees model.

    flavour: lightgbm
    lightgbm: {num_boost_round: 300, num_leaves: 31, learning_rate: 0.05}
    early_stopping: {metric: auc, patience: 20}   # patience counts boosting rounds here

Each field is the LightGBM parameter of the same name. streamml sets the
objective from the task, the evaluation metric from ``early_stopping.metric``,
the seed from ``seed``, and the thread count from the trainer's settings, so
none of those can be given here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LightGBMOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_boost_round: int = Field(200, ge=1, le=100_000, description="boosting rounds at most (trees per output)")
    num_leaves: int = Field(31, ge=2, le=131_072)
    max_depth: int = Field(-1, ge=-1, description="-1: no limit")
    learning_rate: float = Field(0.1, gt=0, le=1)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    bagging_freq: int = Field(0, ge=0, description="bag every k rounds; 0: no bagging")
    lambda_l1: float = Field(0.0, ge=0)
    lambda_l2: float = Field(0.0, ge=0)
    max_bin: int = Field(255, ge=2)
    min_data_per_group: int = Field(100, ge=1, description="rows per category group of a categorical split")
    cat_smooth: float = Field(10.0, ge=0)

    def params(self) -> dict[str, float | int]:
        """The LightGBM parameters, without the round count (an argument of ``lightgbm.train``)."""
        return self.model_dump(exclude={"num_boost_round"})
