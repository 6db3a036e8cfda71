"""The monitor's settings: the ``monitor`` group, from ``STREAMML_MONITOR_*`` or the YAML file.

In the YAML file named by ``STREAMML_CONFIG_FILE``::

    monitor:
      models: [fraud, churn]
      windows: {size: 20000, duration_s: 3600}
      thresholds: {alpha: 0.01, consecutive_windows: 2}
      overrides:
        fraud: {psi: {drift: 0.2, medium: 0.3, high: 0.6}, cooldown_s: 3600}

A model's entry in ``overrides`` replaces the named top-level fields of
``thresholds``; the rest keep the default thresholds. Every key is read:
an unknown key, or overrides for a model outside ``models``, stop the
service at start.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from services.monitor.drift import MonitorThresholds
from services.monitor.windows import WindowSpec
from streamml.registry.keys import check_name
from streamml.settings import Group


class MonitorOptions(Group):
    """The ``monitor`` settings group (STREAMML_MONITOR_*)."""

    models: list[str] = Field(
        default_factory=list, description="JSON list of model names to watch; empty: every model with a champion"
    )
    windows: WindowSpec = Field(
        default_factory=WindowSpec, description="JSON object: when a window closes (see the monitor's README)"
    )
    thresholds: MonitorThresholds = Field(
        default_factory=MonitorThresholds, description="JSON object: the drift tests and their thresholds"
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="JSON object: model -> the threshold fields that differ for it"
    )
    label_ttl_s: float = Field(86_400.0, gt=0, description="how long a prediction waits for its feedback")
    max_pending: int = Field(2_000_000, ge=1, description="predictions (and early feedback) kept waiting, per model")
    history: int = Field(100, ge=1, description="reports and events kept per model for `streamml drift report`")
    poll_batch: int = Field(20_000, ge=1, le=1_000_000, description="records polled and judged at once (the "
                            "messages polled adapt to how many predictions each carries)")
    champion_refresh_s: float = Field(10.0, gt=0, description="how often each champion pointer is re-read")
    checkpoint_interval_s: float = Field(
        10.0, gt=0, description="a model's checkpoint is written at least this often while records come (and "
        "whenever a window closes or drift is raised); offsets are committed with it, so at most this much "
        "traffic is read again after a crash")

    @field_validator("models")
    @classmethod
    def _model_names(cls, names: list[str]) -> list[str]:
        for name in names:
            check_name(name)
        return names

    @model_validator(mode="after")
    def _overrides_valid(self) -> MonitorOptions:
        for model in self.overrides:
            if self.models and model not in self.models:
                raise ValueError(
                    f"overrides.{model}: {model!r} is not among the watched models {self.models}; "
                    "add it to models or remove its overrides"
                )
            try:
                self.thresholds_for(model)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors(include_url=False)
                )
                raise ValueError(f"overrides.{model}: {problems}") from None
        return self

    def thresholds_for(self, model: str) -> MonitorThresholds:
        overrides = self.overrides.get(model)
        if not overrides:
            return self.thresholds
        return MonitorThresholds.model_validate({**self.thresholds.model_dump(), **overrides})
