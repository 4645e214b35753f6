"""The readmission predictor as a ``kserve.Model``: load and verify, then score.

It never reports ready unless the registered model reproduces its golden predictions. Bad input
becomes ``InvalidInput`` (HTTP 400) with every field-level problem; nothing else escapes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput

log = logging.getLogger("hospital_mlops.serving.predictor")


class ReadmissionPredictor(Model):
    def __init__(self, name: str, registered_model: str, ref: str, source: str = "diabetes130"):
        super().__init__(name)
        self.registered_model = registered_model
        self.ref = ref
        self.source = source
        self.ready = False
        self.not_ready_reason = "not loaded yet"

    def load(self) -> bool:
        from hospital_mlops.catalog import load_catalog
        from hospital_mlops.features import feature_set_for
        from hospital_mlops.governance import registry
        from hospital_mlops.use_case import load_use_case

        uri = registry.model_uri(self.registered_model, self.ref)
        try:
            registry.verify_golden(uri)
            loaded = registry.load_risk_model(self.registered_model, self.ref)
        except Exception as exc:
            self.not_ready_reason = f"{type(exc).__name__}: {exc}"
            log.error("model %s not ready: %s", uri, self.not_ready_reason)
            self.ready = False
            return False
        self.model = loaded.model
        self.version = loaded.version
        primary = load_use_case().thresholds.primary
        self.threshold = float(loaded.training["thresholds"][primary])
        self.spec = load_catalog().source(self.source)
        self.feature_set = feature_set_for(self.source)
        self.ready = True
        log.info("serving %s version %s (golden predictions verified)", uri, self.version)
        return True

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any]:
        from hospital_mlops.scoring import InvalidRequest, score

        if not isinstance(payload, dict) or "instances" not in payload:
            problem = {"instance": None, "field": "instances", "message": "missing from the body"}
            raise InvalidInput(json.dumps({"errors": [problem]}))
        try:
            answers = score(
                payload["instances"],
                self.spec,
                self.feature_set,
                self.model,
                self.threshold,
                f"{self.registered_model}/{self.version}",
            )
        except InvalidRequest as exc:
            raise InvalidInput(json.dumps({"errors": [e.as_dict() for e in exc.errors]})) from None
        return {"predictions": answers}
