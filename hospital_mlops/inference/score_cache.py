"""An encounter's last score, read back from the prediction log: what the ``last_cached_score``
fallback shows when the model cannot answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from hospital_mlops.inference.fallback import CachedScore
from hospital_mlops.inference.prediction_log import PredictionLog, predictions


def last_score(
    log: PredictionLog, encounter_token: str | Sequence[str], model: str
) -> CachedScore | None:
    """The newest logged prediction of ``model`` (any version) for the encounter, or None.
    Several tokens: the same encounter's under the current key and the keys being retired."""
    tokens = [encounter_token] if isinstance(encounter_token, str) else list(encounter_token)
    p = predictions
    with log.engine.connect() as conn:
        rows = conn.execute(
            sa.select(p.c.prediction_id, p.c.scored_at, p.c.risk, p.c.alert, p.c.answer).where(
                p.c.encounter_token.in_(tokens),
                p.c.model_name == model,
                p.c.risk.is_not(None),
            )
        ).all()
    if not rows:
        return None

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)

    # the stored ISO strings differ in precision, so they are compared as times, not text
    prediction_id, scored_at, risk, alert, answer = max(rows, key=lambda r: when(r[1]))
    document = json.loads(answer)
    return CachedScore(
        prediction_id=prediction_id,
        risk=float(risk),
        band=str(document.get("band", "")),
        alert=bool(alert),
        scored_at=when(scored_at),
        model_version=str(document.get("model_version", "")),
    )
