"""The readmission explainer as a ``kserve.Model``: ``POST /v1/models/readmission:explain``.

Same v1 body as the predictor, plus ``"view": "clinician"`` (default) or ``"technical"``. It
calls the predictor the way KServe wires an explainer, ``http://{predictor_host}/v1/models/
{name}:predict``, with an async client and timeouts. A predictor 4xx comes back as the same 4xx
(a 400 with the predictor's very field errors); a predictor that cannot be reached or is not
ready is a 503 naming it; a predictor failure is a 502. Never a stack trace.

Ready once its background is built: it starts without the predictor and answers 503 until the
predictor answers. Domain logic is ``hospital_mlops/model/explain.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady

from hospital_mlops.inference.config import ServingConfig
from serving.predictor_client import (
    PredictorClient,
    PredictorFailed,
    PredictorRefused,
    PredictorUnavailable,
)

log = logging.getLogger("hospital_mlops.serving.explainer")

PROBE_CONCURRENCY = 2  # the predictor runs one worker; two in flight hide the network time
SEED = 0


def _bad_request(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        json.dumps({"errors": [{"instance": None, "field": field, "message": message}]})
    )


def _passed_on(exc: PredictorRefused) -> Exception:
    """The predictor's 4xx as the explainer's own: a 400 keeps its exact ``error`` body."""
    try:
        detail = json.loads(exc.body).get("error", exc.body)
    except (ValueError, AttributeError):
        detail = exc.body[:2000]
    if exc.status == 400:
        return InvalidInput(detail)
    return HTTPException(status_code=exc.status, detail=detail)


class RiskExplainer(Model):
    def __init__(
        self,
        name: str,
        predictor_host: str,
        config: ServingConfig,
        *,
        feature_set: str | None = None,
        extract: Path | None = None,
    ) -> None:
        super().__init__(name)
        self.predictor_host = predictor_host
        self.config = config
        self.feature_set_name = feature_set
        self.extract = extract
        self.client = PredictorClient(
            predictor_host, name, config.explainer.predictor_timeout_seconds
        )
        self.background: list[dict[str, Any]] = []
        self.ready = False
        self.not_ready_reason = "not loaded yet"
        self._kernel: Any = None  # RawKernelShap, fitted for one model version
        self._kernel_version: str | None = None
        self._technical_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> bool:
        """Build the background (licence profile ``bsl``); never needs the predictor."""
        from hospital_mlops.inference.served_model import served_feature_set
        from hospital_mlops.model.explain import RawCodec, load_training_background

        try:
            # the predictor's served name says which use case (and feature set) this is
            found = served_feature_set(self.name, self.feature_set_name)
            self.served, self.use_case = found.served, found.use_case
            self.codec = RawCodec.for_served(self.served)
            if self.config.explainer_backend == "alibi":
                import alibi.explainers  # noqa: F401  (seconds to import: not on a request)

                fs = self.served.feature_set
                policy = self.use_case.for_source(fs.source).split
                self.background = load_training_background(
                    self.served, policy, self.config.explainer.background_rows, self.extract
                )
        except Exception as exc:
            self.not_ready_reason = f"{type(exc).__name__}: {exc}"
            log.error("explainer not ready: %s", self.not_ready_reason)
            return False
        self.ready = True
        log.info(
            "explainer ready (%s backend, %d background encounters), predictor at %s",
            self.config.explainer_backend,
            len(self.background),
            self.predictor_host,
        )
        return True

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        from hospital_mlops.model.explain import VIEWS

        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise _bad_request("instances", "missing from the body (a list of instances)")
        view = payload.get("view", "clinician")
        if view not in VIEWS:
            raise _bad_request("view", f"must be one of {list(VIEWS)}")
        instances = payload["instances"]
        limit = self.config.explainer.max_technical_instances
        if view == "technical" and len(instances) > limit:
            raise _bad_request("instances", f"at most {limit} per technical explanation")
        request_id = (headers or {}).get("x-request-id")
        try:
            if view == "clinician":
                return await self._clinician(instances, request_id)
            return await self._technical(instances, request_id)
        except PredictorRefused as exc:
            raise _passed_on(exc) from None
        except PredictorUnavailable as exc:
            raise ModelNotReady(self.name, f"{exc}; try again shortly") from None
        except PredictorFailed as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None

    async def _clinician(self, instances: list[Any], request_id: str | None) -> dict[str, Any]:
        from hospital_mlops.model.explain import clinician_view

        answers = await self.client.predict(instances, caller="instance", request_id=request_id)
        top_k = self.config.explainer.top_k
        return {
            "view": "clinician",
            "explanations": [
                clinician_view(a, i, top_k, self.served, self.use_case.risk_phrase)
                for a, i in zip(answers, instances, strict=True)
            ],
        }

    async def _technical(self, instances: list[Any], request_id: str | None) -> dict[str, Any]:
        from hospital_mlops.model.explain import RawAttribution, technical_view

        answers = await self.client.predict(
            instances, caller="instance", request_id=request_id, full=True
        )
        raws: list[RawAttribution | None] = [None] * len(instances)
        settings: dict[str, Any] = {}
        if self.config.explainer_backend == "alibi":
            version = str(answers[0]["model_version"])
            async with self._technical_lock:  # KernelSHAP keeps per-explanation state
                kernel = await self._kernel_for(version)
                raws = list(await asyncio.to_thread(lambda: [kernel.explain(i) for i in instances]))
            settings = {
                "nsamples": kernel.nsamples,
                "seed": kernel.seed,
                "background": {
                    "rows": len(self.background),
                    "from": "real encounters of the training period, evenly spaced in time "
                    "(bundled extract, de-identified by the pipeline)",
                },
            }
        return {
            "view": "technical",
            "licence_profile": self.config.licence_profile,
            "explanations": [
                technical_view(a, i, r, settings, self.served)
                for a, i, r in zip(answers, instances, raws, strict=True)
            ],
        }

    async def _kernel_for(self, version: str) -> Any:
        """KernelSHAP fitted against the predictor's current model version (fitting scores the
        background, so it waits for the first technical request, not for start-up)."""
        from hospital_mlops.model.explain import RawKernelShap

        if self._kernel is None or self._kernel_version != version:
            self._loop = asyncio.get_running_loop()
            risk_of = self._probe_risks_for(version)
            self._kernel = await asyncio.to_thread(
                RawKernelShap,
                self.codec,
                self.background,
                risk_of,
                self.config.explainer.nsamples,
                SEED,
            )
            self._kernel_version = version
        return self._kernel

    def _probe_risks_for(self, version: str) -> Any:
        """A blocking ``risk_of`` for KernelSHAP's worker thread: batches of at most
        ``limits.max_instances`` scored by the predictor on the serving loop."""
        batch = self.config.limits.max_instances

        async def risks(rows: list[dict[str, Any]]) -> np.ndarray:
            gate = asyncio.Semaphore(PROBE_CONCURRENCY)

            async def one(chunk: list[dict[str, Any]]) -> list[float]:
                async with gate:
                    try:
                        answers = await self.client.predict(chunk, caller="probe")
                    except PredictorRefused as exc:
                        # Probes are recombined real encounters the caller never sent: a refusal
                        # is the explainer's failure, not a client error.
                        raise PredictorFailed(
                            f"the predictor refused a KernelSHAP probe (HTTP {exc.status})"
                        ) from None
                if any(str(a["model_version"]) != version for a in answers):
                    raise PredictorFailed("the predictor's model version changed mid-explanation")
                return [float(a["risk"]) for a in answers]

            parts = await asyncio.gather(
                *(one(rows[i : i + batch]) for i in range(0, len(rows), batch))
            )
            return np.asarray([r for part in parts for r in part])

        def risk_of(rows: list[dict[str, Any]]) -> np.ndarray:
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(risks(rows), self._loop).result()

        return risk_of


class ExplainerNotReady(RuntimeError):
    """The explainer could not build its background; no server starts."""


def serve_explainer(
    predictor_host: str,
    port: int,
    bind_loopback: bool = True,
    *,
    model_name: str = "readmission",
    feature_set: str | None = None,
    extract: Path | None = None,
    config: ServingConfig | None = None,
) -> None:
    """Run the explainer (blocking) on ``port``; ``predictor_host`` is ``HOST:PORT`` of the
    predictor, as KServe passes it to an explainer container. ``extract`` (default: the
    catalog's bundled one) is where the background encounters come from."""
    from kserve import ModelServer

    from hospital_mlops.inference.config import load_serving_config
    from serving.server import configure_rest_server

    config = config or load_serving_config()
    host = "127.0.0.1" if bind_loopback else "0.0.0.0"
    configure_rest_server(host, config.limits.max_body_bytes, "explainer")
    explainer = RiskExplainer(
        model_name, predictor_host, config, feature_set=feature_set, extract=extract
    )
    if not explainer.load():
        raise ExplainerNotReady(f"explainer: {explainer.not_ready_reason}")
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([explainer])
