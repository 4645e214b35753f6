"""Which FHIR reading gives a feature set's served inputs: the reader its serving recipe names.

A set served through CDS Hooks names its FHIR mapping (``ServingRecipe.fhir_reader``, a
"module:function" of this layer) beside its other definitions, so this module names no set; a
set with none is not offered on a CDS service (``reader_for`` says so by name).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime

from hospital_mlops.ehr.fhir_input_reader import ModelInputs
from hospital_mlops.ehr.fhir_mapping import FhirMapping
from hospital_mlops.ehr.fhir_record import PatientRecord

Reader = Callable[[PatientRecord, FhirMapping, datetime | None], ModelInputs]


def reader_for(feature_set: str) -> Reader:
    from hospital_mlops.features import SERVING_RECIPES

    recipe = SERVING_RECIPES.get(feature_set)
    if recipe is None or not recipe.fhir_reader:
        with_one = sorted(name for name, r in SERVING_RECIPES.items() if r.fhir_reader)
        raise LookupError(
            f"feature set {feature_set!r} names no FHIR reading (its ServingRecipe's "
            f"fhir_reader); its model cannot be offered on a CDS service. Sets with one: "
            f"{', '.join(with_one)}"
        )
    module, _, function = recipe.fhir_reader.partition(":")
    try:
        reader: Reader = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise LookupError(
            f"feature set {feature_set!r}: its FHIR reading {recipe.fhir_reader!r} cannot be "
            f"loaded ({exc})"
        ) from None
    return reader
