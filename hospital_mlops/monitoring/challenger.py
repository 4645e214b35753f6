"""A challenger against the champion on the same recent window, before any rollout.

The window's encounters are the ones the champion actually scored in production, with the
outcomes that have arrived since. The challenger re-scores each logged request exactly as it
was received (the same validation and feature code the predictor runs), so both models are
judged on the same patients, inputs and outcomes. Differences come with paired bootstrap CIs
(``governance.compare``); the resampling unit is the encounter, as the log holds no patient
identifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.monitoring.outcomes import outcomes_table

BATCH = 100  # the predictor's per-request limit: the same validation path


class ChallengerError(ValueError):
    pass


@dataclass(frozen=True)
class ChallengerPolicy:
    max_auroc_loss: float  # the difference's CI lower bound may not fall below −this
    ece_max: float
    min_outcomes: int


def window_with_outcomes(
    log: PredictionLog, model: str, version: int, since: datetime, until: datetime
) -> pd.DataFrame:
    """The version's logged predictions in [since, until] that have an outcome: ``inputs``
    (as received), ``risk`` (as served), ``encounter_token``, ``outcome``."""
    p, o = predictions, outcomes_table(log)
    query = (
        sa.select(p.c.inputs, p.c.risk, p.c.encounter_token, p.c.scored_at, o.c.readmitted_30d)
        .select_from(p.join(o, p.c.encounter_token == o.c.encounter_token))
        .where(p.c.model_name == model, p.c.model_version == version, p.c.risk.is_not(None))
    )
    columns = ["inputs", "risk", "encounter_token", "scored_at", "outcome"]
    with log.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=columns)
    when = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    frame = frame[(when >= since) & (when <= until)].reset_index(drop=True)
    frame["outcome"] = frame["outcome"].astype(bool).astype("float64")
    return frame


def rescore(model: str, version: int, inputs: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
    """The version's risks for requests exactly as logged, and its primary threshold."""
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.served_model import serving_setup
    from hospital_mlops.model.scoring import score

    loaded = registry.load_risk_model(model, str(version))
    setup = serving_setup(loaded.model, loaded.training, loaded.tags)
    threshold = setup.threshold
    risks: list[float] = []
    for start in range(0, len(inputs), BATCH):
        answers = score(
            inputs[start : start + BATCH],
            setup.served,
            loaded.model,
            threshold,
            f"{model}/{version}",
        )
        risks += [a["risk"] for a in answers]
    return np.asarray(risks, dtype="float64"), threshold


def compare_on_window(
    log: PredictionLog,
    model: str,
    champion: int,
    challenger: int,
    since: datetime,
    until: datetime,
    policy: ChallengerPolicy,
    replicates: int = 500,
) -> dict[str, Any]:
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.compare import compare_scores
    from hospital_mlops.inference.served_model import use_case_of

    frame = window_with_outcomes(log, model, champion, since, until)
    if len(frame) < policy.min_outcomes:
        raise ChallengerError(
            f"{len(frame)} of the champion's predictions between {since.isoformat()} and "
            f"{until.isoformat()} have outcomes; the comparison needs {policy.min_outcomes}"
        )
    y = frame["outcome"].to_numpy()
    if not 0 < y.sum() < len(y):
        raise ChallengerError("the window's outcomes are all one class: nothing to compare on")
    inputs = [json.loads(text) for text in frame["inputs"]]
    challenger_risk, challenger_threshold = rescore(model, challenger, inputs)
    champion_version = registry.client().get_model_version(model, str(champion))
    training = registry.training_record(champion_version)
    primary = use_case_of(training, champion_version.tags).thresholds.primary
    champion_threshold = float(training["thresholds"][primary])
    result = compare_scores(
        y,
        frame["encounter_token"],
        {"champion": frame["risk"].to_numpy(dtype="float64"), "challenger": challenger_risk},
        {"champion": champion_threshold, "challenger": challenger_threshold},
        replicates=replicates,
    )
    auroc_low = result["challenger_minus_champion"]["auroc"]["ci"][0]
    ece = result["models"]["challenger"]["ece"]["value"]
    checks = [
        {
            "name": "auroc_not_worse",
            "passed": auroc_low >= -policy.max_auroc_loss,
            "observed": auroc_low,
            "limit": -policy.max_auroc_loss,
        },
        {"name": "ece", "passed": ece <= policy.ece_max, "observed": ece, "limit": policy.ece_max},
    ]
    return {
        "model": model,
        "champion": champion,
        "challenger": challenger,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        **result,
        "checks": checks,
        "challenger_fit_for_rollout": all(c["passed"] for c in checks),
    }
