"""A FHIR R4 record → exactly the inputs the readmission model was trained on.

``model_inputs`` computes the predictor's v1 instance from a gathered ``PatientRecord``
(``fhir_record``) with the mapping of ``config/fhir_mapping.yaml``, reading the admission's
inputs, the stay's, and the clinical ones in a fixed order. Anything it cannot map is reported
as missing, unmapped or out of range, never silently defaulted; what cannot be read at all is
refused (``FhirInputError``, a 400 naming the resource and the problem). Pure: no HTTP here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hospital_mlops.ehr.fhir_admission_inputs import (
    read_admission_codes,
    read_demographics,
    read_prior_encounters,
)
from hospital_mlops.ehr.fhir_clinical_inputs import read_diagnoses, read_labs, read_medications
from hospital_mlops.ehr.fhir_input_reader import InputReader, ModelInputs
from hospital_mlops.ehr.fhir_mapping import FhirMapping
from hospital_mlops.ehr.fhir_record import PatientRecord
from hospital_mlops.ehr.fhir_stay_inputs import read_discharge_and_stay_counts, read_stay_length


def model_inputs(
    record: PatientRecord, mapping: FhirMapping, now: datetime | None = None
) -> ModelInputs:
    """The predictor's v1 instance for the record's current encounter, with what is missing,
    unmapped or out of range. Raises ``FhirInputError`` for what cannot be read at all."""
    now = now or datetime.now(UTC)
    reader = InputReader(mapping, record, now)
    read_demographics(reader)
    if read_stay_length(reader):  # without the stay's start, its codes and counts are not read
        read_admission_codes(reader)
        read_discharge_and_stay_counts(reader)
    read_prior_encounters(reader)
    read_diagnoses(reader)
    read_labs(reader)
    read_medications(reader)
    return reader.result()
