"""A v1 client for the predictor, as KServe wires callers to it (``predictor_host``): the
explainer and the CDS Hooks service use it. Failures are typed by what a caller does next:
unavailable or not ready (try later, or fall back), failed (a 5xx: fall back, report), refused
(a 4xx: the caller's input, passed on as it is)."""

from __future__ import annotations

from typing import Any

import httpx

from hospital_mlops.security.api_access import client_headers

# Tells the predictor who is asking: "instance" = the encounter being explained (a real scoring
# request), "probe" = a KernelSHAP coalition (a synthetic mix of real encounters, which must not
# be logged as a prediction nor fed to drift detection).
CALLER_HEADER = "x-hmlops-explainer"


class PredictorUnavailable(RuntimeError):
    """The predictor cannot be reached, timed out, or is not ready (→ 503)."""


class PredictorNotReady(PredictorUnavailable):
    """The predictor answered 503: up, but its model is loading or failed verification."""


class PredictorFailed(RuntimeError):
    """The predictor answered with a 5xx or with something that is not a v1 answer (→ 502)."""


class PredictorRefused(Exception):
    """The predictor refused the request (4xx); ``body`` is its answer, passed on as it is."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class PredictorClient:
    """v1 predict calls to ``predictor_host``; one pooled async client per serving loop."""

    def __init__(self, host: str, model_name: str, timeout_seconds: float) -> None:
        self.host = host
        self.url = f"http://{host}/v1/models/{model_name}:predict"
        self.timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 2.0))
        self._client: httpx.AsyncClient | None = None
        self._auth = client_headers()  # this server's own token, when the predictor wants one

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # created in the serving loop, where it is used
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def predict(
        self,
        instances: list[Any],
        *,
        caller: str,
        request_id: str | None = None,
        full: bool = False,
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"instances": instances}
        if full:
            body["explain"] = "full"  # every contribution and the baseline, when supported
        headers = {CALLER_HEADER: caller, **self._auth}
        if request_id:
            headers["x-request-id"] = request_id
        try:
            response = await self._http().post(self.url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise PredictorUnavailable(
                f"the predictor at {self.host} did not answer within {self.timeout.read:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise PredictorUnavailable(
                f"the predictor at {self.host} is not reachable ({type(exc).__name__})"
            ) from None
        status = response.status_code
        if 400 <= status < 500:
            raise PredictorRefused(status, response.text)
        if status == 503:
            raise PredictorNotReady(f"the predictor at {self.host} is not ready yet")
        if status != 200:
            raise PredictorFailed(f"the predictor at {self.host} failed (HTTP {status})")
        try:
            answers = response.json()["predictions"]
        except (ValueError, KeyError, TypeError):
            raise PredictorFailed(f"the predictor at {self.host} sent no v1 answer") from None
        if not isinstance(answers, list) or len(answers) != len(instances):
            raise PredictorFailed(f"the predictor at {self.host} sent the wrong number of answers")
        return answers
