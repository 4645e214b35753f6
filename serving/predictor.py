"""The risk predictor as a ``kserve.Model``: load and verify, then score.

One image serves any registered model: the model's own record says which feature set it was
trained on and for which use case (``inference.served_model``), and that decides the request
contract, the feature code and the threshold.

It never reports ready unless the registered model's files hash to the recorded sha256 and
reproduce the golden predictions. It answers v1 (``instances``) and Open Inference Protocol v2
(``inputs`` tensors) with the same scoring core. Bad input becomes ``InvalidInput`` (HTTP 400)
listing every field-level problem; nothing else escapes. Every answer is written to the
prediction log and, locally, emitted as the CloudEvents the KServe agent would send.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from hospital_mlops.drift.inference_events import new_event_id

log = logging.getLogger("hospital_mlops.serving.predictor")
EXPLAINER_HEADER = "x-hmlops-explainer"  # "probe" on the explainer's synthetic rows


def _bad_request(errors: list[dict[str, Any]]) -> InvalidInput:
    return InvalidInput(json.dumps({"errors": errors}))


class RiskPredictor(Model):
    def __init__(
        self,
        name: str,
        registered_model: str,
        ref: str,
        *,
        logger_url: str | None = None,
        prediction_log_url: str | None = None,
        expected_sha256: str | None = None,
    ):
        """``registered_model``/``ref``: a registry name and version or alias; or, with
        ``ref == "path"``, ``registered_model`` is a bundle directory (``hmlops registry
        export``), e.g. KServe's ``/mnt/models``. ``expected_sha256`` pins the artifact."""
        super().__init__(name)
        self.registered_model = registered_model
        self.ref = ref
        self.expected_sha256 = expected_sha256
        self.logger_url = logger_url
        self.prediction_log_url = prediction_log_url
        self.ready = False
        self.not_ready_reason = "not loaded yet"

    def load(self) -> bool:
        from hospital_mlops.governance import registry
        from hospital_mlops.inference.bundle import load_bundle
        from hospital_mlops.inference.config import load_serving_config
        from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel
        from hospital_mlops.inference.served_model import serving_setup

        from_path = self.ref == "path"
        uri = (
            self.registered_model
            if from_path
            else registry.model_uri(self.registered_model, self.ref)
        )
        try:
            config = load_serving_config()
            loaded: Any
            if from_path:
                loaded = load_bundle(Path(self.registered_model), self.expected_sha256)
                self.registered_model = loaded.name
            else:
                registry.verify_golden(uri)
                loaded = registry.load_risk_model(self.registered_model, self.ref)
                if self.expected_sha256 and loaded.sha256 != self.expected_sha256:
                    raise registry.ArtifactMismatch(
                        f"{uri} hashes to {loaded.sha256[:16]}…, the deployment pins "
                        f"{self.expected_sha256[:16]}…"
                    )
            self.setup = serving_setup(loaded.model, loaded.training, loaded.tags)
            self.prediction_log = PredictionLog(self.prediction_log_url)
        except Exception as exc:
            self.not_ready_reason = f"{type(exc).__name__}: {exc}"
            log.error("model %s not ready: %s", uri, self.not_ready_reason)
            self.ready = False
            return False
        self.max_instances = config.limits.max_instances
        self.model = loaded.model
        self.feature_set = self.setup.feature_set
        self.model.row_scorer(self.feature_set)  # built now, not on the first patient's request
        self.version = loaded.version
        self.threshold = self.setup.threshold
        self.served = ServedModel(
            name=self.registered_model,
            version=loaded.version,
            sha256=loaded.sha256,
            feature_set_version=self.feature_set.version,
            features_sha256=loaded.tags.get("lineage.features_sha256", ""),
            source=self.feature_set.source,
        )
        self.emitter = None
        from serving.metrics import RequestMetrics

        self.metrics = RequestMetrics(self.registered_model, loaded.version)
        if self.logger_url:
            from serving.event_emitter import EventEmitter

            self.emitter = EventEmitter(self.logger_url, self.name)
        from serving.metrics import LOSSES

        LOSSES.watch(self.registered_model, loaded.version, self._losses)
        self.ready = True
        log.info(
            "serving %s version %s (sha256 %s…, golden predictions verified)",
            uri,
            self.version,
            loaded.sha256[:12],
        )
        return True

    def _answer(self, instances: Any, full: bool = False) -> list[dict[str, Any]]:
        from hospital_mlops.model.scoring import InvalidRequest, score

        try:
            return score(
                instances,
                self.setup.served,
                self.model,
                self.threshold,
                f"{self.registered_model}/{self.version}",
                max_instances=self.max_instances,
                contributions=full,
            )
        except InvalidRequest as exc:
            raise _bad_request([e.as_dict() for e in exc.errors]) from None

    def _record(
        self,
        request_id: str,
        protocol: str,
        instances: list[Any],
        answers: list[dict[str, Any]],
        request_body: dict[str, Any],
        response_body: dict[str, Any],
    ) -> None:
        from hospital_mlops.inference.prediction_log import records

        self.prediction_log.append(records(request_id, protocol, self.served, instances, answers))
        if self.emitter is not None:
            self.emitter.emit(request_id, request_body, response_body)

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | InferResponse:
        started = time.perf_counter()
        try:
            answer = self._predict(payload, headers)
        except InvalidInput:
            self.metrics.invalid()
            raise
        except Exception:
            self.metrics.failed()
            raise
        self.metrics.answered(time.perf_counter() - started)
        return answer

    def _predict(
        self, payload: Any, headers: dict[str, str] | None
    ) -> dict[str, Any] | InferResponse:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        # A shadow deployment receives the champion's logged request: its ce-id pairs the two.
        request_id = (headers.get("ce-id") or headers.get("x-request-id") or new_event_id())[:128]
        # KernelShap's synthetic probe rows are not predictions about anyone: not logged, not
        # sent to drift detection (on a cluster the logger's metadata header lets Triggers
        # drop them too).
        record = headers.get(EXPLAINER_HEADER) != "probe"
        if isinstance(payload, InferRequest):
            return self._predict_v2(payload, request_id, record)
        if not isinstance(payload, dict) or "instances" not in payload:
            raise _bad_request(
                [{"instance": None, "field": "instances", "message": "missing from the body"}]
            )
        explain = payload.get("explain")
        if explain not in (None, "full"):
            raise _bad_request(
                [{"instance": None, "field": "explain", "message": "must be 'full' or absent"}]
            )
        answers = self._answer(payload["instances"], full=explain == "full")
        response = {"predictions": answers}
        if record:
            self._record(request_id, "v1", payload["instances"], answers, payload, response)
        return response

    def _predict_v2(self, request: InferRequest, request_id: str, record: bool) -> InferResponse:
        from hospital_mlops.model.scoring import (
            InvalidRequest,
            Tensor,
            instances_from_v2,
            v2_outputs,
        )

        tensors = [
            Tensor(t.name, t.datatype, t.shape, t.data, t.parameters) for t in request.inputs
        ]
        try:
            instances = instances_from_v2(tensors, max_instances=self.max_instances)
        except InvalidRequest as exc:
            raise _bad_request([e.as_dict() for e in exc.errors]) from None
        answers = self._answer(instances)
        outputs = [
            InferOutput(name=t.name, shape=list(t.shape), datatype=t.datatype, data=t.data)
            for t in v2_outputs(answers)
        ]
        response = InferResponse(
            model_name=self.name,
            model_version=str(self.version),
            infer_outputs=outputs,
            response_id=request.id or request_id,
        )
        request_body = {
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.shape),
                    "data": t.data,
                    **({"parameters": dict(t.parameters)} if t.parameters else {}),
                }
                for t in tensors
            ]
        }
        response_body = {"outputs": [{"name": t.name, "data": t.data} for t in v2_outputs(answers)]}
        if record:
            self._record(request_id, "v2", instances, answers, request_body, response_body)
        return response

    def get_input_types(self) -> list[dict[str, Any]]:
        """OIP model metadata (``GET /v2/models/NAME``): every input tensor by name, datatype and
        shape, so a standard client can discover what to send."""
        from hospital_mlops.model.scoring import v2_input_metadata

        return v2_input_metadata(self.setup.served) if self.ready else []

    def get_output_types(self) -> list[dict[str, Any]]:
        from hospital_mlops.model.scoring import v2_output_metadata

        return v2_output_metadata()

    def _losses(self) -> tuple[int, int, int]:
        emitter = self.emitter
        events = (emitter.failed, emitter.dropped) if emitter is not None else (0, 0)
        return (self.prediction_log.failed_writes, *events)

    def stop(self) -> None:
        from serving.metrics import LOSSES

        LOSSES.unwatch(self._losses)
        emitter = getattr(self, "emitter", None)
        if emitter is not None:
            emitter.close()
        prediction_log = getattr(self, "prediction_log", None)
        if prediction_log is not None:
            prediction_log.close()
        super().stop()
