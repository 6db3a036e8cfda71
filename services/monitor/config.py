"""The monitor's settings group: window shape, default thresholds and per-model overrides.

In the YAML file named by ``STREAMML_CONFIG_FILE``::

    monitor:
      windows: {size: 20000, duration_s: 3600}
      thresholds: {alpha: 0.01, consecutive_windows: 2}
      models:
        fraud: {psi: {drift: 0.2, medium: 0.3, high: 0.6}, cooldown_s: 3600}

A model's entry overrides the named top-level fields of ``thresholds``;
the rest keep the default thresholds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.monitor.drift import MonitorThresholds
from services.monitor.windows import WindowSpec


class MonitorOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: WindowSpec = WindowSpec()
    thresholds: MonitorThresholds = MonitorThresholds()
    models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="model -> threshold overrides")
    label_ttl_s: float = Field(86_400.0, gt=0, description="how long a prediction waits for its feedback")
    max_pending: int = Field(2_000_000, ge=1, description="predictions (and early feedback) kept waiting, per model")
    history: int = Field(100, ge=1, description="reports kept per model for `streamml drift report`")

    @model_validator(mode="after")
    def _overrides_valid(self) -> MonitorOptions:
        for model in self.models:
            try:
                self.thresholds_for(model)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors(include_url=False)
                )
                raise ValueError(f"models.{model}: {problems}") from None
        return self

    def thresholds_for(self, model: str) -> MonitorThresholds:
        overrides = self.models.get(model)
        if not overrides:
            return self.thresholds
        return MonitorThresholds.model_validate({**self.thresholds.model_dump(), **overrides})
