"""Which FHIR reading gives a feature set's served inputs: the set's FHIR mapping, by set name.

A set served through CDS Hooks names its reader here (beside the readers themselves); a set
with none is not offered on a CDS service (``reader_for`` says so by name).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hospital_mlops.ehr.fhir_admission_inputs import admission_model_inputs
from hospital_mlops.ehr.fhir_input_reader import ModelInputs
from hospital_mlops.ehr.fhir_mapping import FhirMapping
from hospital_mlops.ehr.fhir_readmission_inputs import model_inputs
from hospital_mlops.ehr.fhir_record import PatientRecord

Reader = Callable[[PatientRecord, FhirMapping, datetime | None], ModelInputs]

FHIR_READERS: dict[str, Reader] = {
    "readmission_diabetes130": model_inputs,
    "post_acute_diabetes130": admission_model_inputs,
}


def reader_for(feature_set: str) -> Reader:
    if feature_set not in FHIR_READERS:
        raise LookupError(
            f"feature set {feature_set!r} has no FHIR reading (ehr/fhir_readers.py); its model "
            f"cannot be offered on a CDS service. Sets with one: {', '.join(FHIR_READERS)}"
        )
    return FHIR_READERS[feature_set]
