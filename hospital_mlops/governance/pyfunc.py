"""The MLflow pyfunc flavour of ``RiskModel``: ``predict`` returns calibrated risks.

MLflow's stock flavours return class labels from ``predict``; a risk model must return the
probability, so the registered model wraps our own scoring function and feature encoding.

``RiskPyfunc`` is built on first access (module ``__getattr__``), not when this module is
imported: importing MLflow starts its telemetry unless it was switched off first, and importing
the library changes nothing (hospital_mlops/quiet.py). The class keeps this module and its name,
so MLflow's pickle refers to it by name and a load finds it here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd

from hospital_mlops.quiet import before_mlflow


@functools.cache
def risk_pyfunc_class() -> type:
    before_mlflow()
    from mlflow.pyfunc import PythonModel

    class RiskPyfunc(PythonModel):
        def load_context(self, context: Any) -> None:
            from hospital_mlops.features import feature_set_named
            from hospital_mlops.model.train import RiskModel

            self.model = RiskModel.load(Path(context.artifacts["risk_model"]))
            found = feature_set_named(self.model.feature_set_name)
            if found is None:
                raise RuntimeError(f"feature set {self.model.feature_set_name!r} is not installed")
            self.feature_set = found
            if self.feature_set.version != self.model.feature_set_version:
                raise RuntimeError(
                    f"the model was trained on {self.model.feature_set_version} but this code "
                    f"defines {self.feature_set.version}; serve it with the matching release"
                )

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: Any = None
        ) -> pd.DataFrame:
            risk = self.model.predict_risk(model_input, self.feature_set)
            return pd.DataFrame({"risk": risk}, index=model_input.index)

    RiskPyfunc.__module__ = __name__
    RiskPyfunc.__qualname__ = "RiskPyfunc"
    return RiskPyfunc


def __getattr__(name: str) -> Any:
    if name == "RiskPyfunc":
        return risk_pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
