"""The MLflow pyfunc flavour of ``RiskModel``: ``predict`` returns calibrated risks.

MLflow's stock flavours return class labels from ``predict``; a risk model must return the
probability, so the registered model wraps our own scoring function and feature encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel


class RiskPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from hospital_mlops.features import FEATURE_SETS
        from hospital_mlops.train import RiskModel

        self.model = RiskModel.load(Path(context.artifacts["risk_model"]))
        sets = [fs for fs in FEATURE_SETS.values() if fs.name == self.model.feature_set_name]
        if not sets:
            raise RuntimeError(f"feature set {self.model.feature_set_name!r} is not installed")
        self.feature_set = sets[0]
        if self.feature_set.version != self.model.feature_set_version:
            raise RuntimeError(
                f"the model was trained on {self.model.feature_set_version} but this code "
                f"defines {self.feature_set.version}; serve it with the matching release"
            )

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        risk = self.model.predict_risk(model_input, self.feature_set)
        return pd.DataFrame({"risk": risk}, index=model_input.index)
