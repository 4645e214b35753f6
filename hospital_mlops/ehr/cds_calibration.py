"""The card's calibration table: the validation period's observed rates for the version that
answered, read from its registered evidence. None when the registry cannot say; the card then
states the calibrated risk itself.
"""

from __future__ import annotations

import logging

from hospital_mlops import artifacts
from hospital_mlops.ehr.cds_card import CalibrationTable

log = logging.getLogger(__name__)


def registry_calibration(model_version: str) -> CalibrationTable | None:
    import pandas as pd

    from hospital_mlops.governance import registry
    from hospital_mlops.model.evaluate.columns import LABEL, SCORE

    name, _, version = model_version.partition("/")
    if not version.isdigit():
        return None
    try:
        mv = registry.resolve(registry.client(), name, version)
        path = registry.evidence_file(mv.run_id, artifacts.evidence(artifacts.TEST_PREDICTIONS))
        if path is None:
            log.warning("no calibration table for %s: no test predictions", model_version)
            return None
        frame = pd.read_parquet(path, columns=[SCORE, LABEL])
    except Exception as exc:  # the card then states the calibrated risk itself
        log.warning("no calibration table for %s: %s", model_version, type(exc).__name__)
        return None
    return CalibrationTable.from_scores(
        frame[SCORE].to_numpy("float64"), frame[LABEL].to_numpy("float64")
    )
