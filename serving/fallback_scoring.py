"""Scoring through the predictor, with ``config/fallback.yaml`` when it cannot answer: what a
caller in the clinical workflow (the CDS Hooks service) uses, so a clinician never waits on a
dead service nor sees a stale number dressed as a fresh one.

A 4xx is the caller's own bad input: it is raised, not covered up by a fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from hospital_mlops.inference.fallback import CachedScore, Cause, FallbackPolicy, fallback_answer
from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.inference.score_cache import last_score
from hospital_mlops.model.scoring import ENCOUNTER_TOKEN
from serving.predictor_client import (
    PredictorClient,
    PredictorFailed,
    PredictorNotReady,
    PredictorUnavailable,
)

log = logging.getLogger("hospital_mlops.serving.fallback")
CacheLookup = Callable[[Any], CachedScore | None]


def no_cache(_: Any) -> None:
    return None


def cache_from_log(
    prediction_log: PredictionLog, model: str, also: Sequence[str] = ()
) -> CacheLookup:
    """The encounter's last logged score of ``model``, by the instance's encounter token (and
    ``also`` these tokens of the same encounter, made with keys being retired)."""

    def lookup(instance: Any) -> CachedScore | None:
        token = instance.get(ENCOUNTER_TOKEN) if isinstance(instance, dict) else None
        if not isinstance(token, str):
            return None
        return last_score(prediction_log, [token, *also], model)

    return lookup


async def score_or_fallback(
    client: PredictorClient,
    instances: list[Any],
    policy: FallbackPolicy,
    *,
    cached: CacheLookup = no_cache,
    request_id: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One answer per instance: the model's, or the policy's fallback (``fallback: true``)."""
    cause: Cause
    try:
        return await client.predict(instances, caller="instance", request_id=request_id)
    except PredictorNotReady as exc:
        cause, why = "not_ready", str(exc)
    except PredictorUnavailable as exc:
        cause, why = "unavailable", str(exc)
    except PredictorFailed as exc:
        cause, why = "failed", str(exc)
    # the reason names the service, never the patient: it is safe to log
    log.warning("fallback (%s, mode %s): %s", cause, policy.mode, why)
    moment = now or datetime.now(UTC)
    return [
        fallback_answer(policy, instance, cause, cached(instance), moment).as_dict()
        for instance in instances
    ]
