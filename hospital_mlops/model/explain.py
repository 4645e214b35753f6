"""Explanations of a readmission risk, for two readers.

The clinician view turns the predictor's reason codes (exact TreeSHAP, ``reasons.attribute``)
into three short sentences in plain words: what about this patient raises or lowers the risk.
Nothing in it needs a statistics vocabulary.

The technical audit view attributes the risk to the *raw request inputs* with KernelSHAP
(``alibi.explainers.KernelShap``, BSL 1.1, imported only when used): each instance is encoded as
a numeric vector, KernelSHAP swaps inputs for those of real training-period encounters (the
background), and every vector is decoded back to a raw instance and scored by the predictor.
Attributions are in probability points: base value + Σ attributions = risk. With the permissive
licence profile only the predictor's exact TreeSHAP contributions are used and alibi is never
imported.

Pure domain code: no KServe; the HTTP adapter is ``serving/explainer.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import SourceSpec
from hospital_mlops.features import ServedInputs
from hospital_mlops.features.served import jsonable
from hospital_mlops.model.example_requests import period_instances
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS
from hospital_mlops.use_case import SplitPolicy

VIEWS = ("clinician", "technical")
# Words a clinician-facing sentence must never contain (checked by the tests).
JARGON = ("log-odds", "logit", "shap", "contribution", "attribution", "feature", "coefficient")


# --- clinician view ----------------------------------------------------------------------------


def plain_features(instance: Mapping[str, Any], served: ServedInputs) -> dict[str, Any]:
    """The model's features of one validated raw instance, by the feature code's own row
    function (the serving path; pandas-free, held equal to the pipeline's by its tests)."""
    row = {name: instance.get(name) for name in served.inputs}
    return served.feature_row(row, int(instance.get(PRIOR_ENCOUNTERS, 0)))


def _counted(n: float, one: str, many: str, none: str) -> str:
    count = int(n)
    if count == 0:
        return none
    if count == 1:
        return f"One {one}"
    return f"{count} {many}"


_COUNT_WORDS = {  # feature: (one, many, none)
    "inpatient_admissions_prior_year": (
        "hospital stay in the past year",
        "hospital stays in the past year",
        "No hospital stays in the past year",
    ),
    "emergency_visits_prior_year": (
        "emergency department visit in the past year",
        "emergency department visits in the past year",
        "No emergency department visits in the past year",
    ),
    "outpatient_visits_prior_year": (
        "clinic visit in the past year",
        "clinic visits in the past year",
        "No clinic visits in the past year",
    ),
    "earlier_encounters_in_extract": (
        "earlier hospital stay on record",
        "earlier hospital stays on record",
        "No earlier hospital stays on record",
    ),
    "num_lab_procedures": (
        "lab test during this stay",
        "lab tests during this stay",
        "No lab tests during this stay",
    ),
    "num_procedures": (
        "procedure during this stay",
        "procedures during this stay",
        "No procedures during this stay",
    ),
    "num_medications": (
        "medicine given during this stay",
        "different medicines given during this stay",
        "No medicines given during this stay",
    ),
    "number_diagnoses": (
        "condition recorded for this stay",
        "conditions recorded for this stay",
        "No conditions recorded for this stay",
    ),
    "diabetes_medications_active": (
        "diabetes medicine",
        "diabetes medicines",
        "No diabetes medicines",
    ),
}

_CATEGORY_WORDS: dict[str, dict[Any, str]] = {
    "admission_type": {
        "emergency": "Emergency admission",
        "urgent": "Urgent admission",
        "elective": "Planned admission",
        "other": "Type of admission not recorded",
    },
    "admission_source": {
        "emergency_room": "Came in through the emergency department",
        "referral": "Admitted on a doctor's referral",
        "transfer": "Transferred in from another hospital or care facility",
        "other": "Route of admission not recorded",
    },
    "discharge_disposition": {
        "home": "Discharged home",
        "home_health": "Discharged home with home health care",
        "facility": "Discharged to a nursing, rehabilitation or long-term care facility",
        "transfer": "Transferred to another hospital",
        "ama": "Left hospital against medical advice",
        "other": "Discharge destination not recorded",
    },
    "primary_diagnosis_group": {
        "circulatory": "Main diagnosis is a heart or circulation condition",
        "respiratory": "Main diagnosis is a lung or breathing condition",
        "digestive": "Main diagnosis is a digestive condition",
        "diabetes": "Main diagnosis is diabetes",
        "injury": "Main diagnosis is an injury",
        "musculoskeletal": "Main diagnosis is a bone, joint or muscle condition",
        "genitourinary": "Main diagnosis is a kidney, bladder or reproductive condition",
        "neoplasms": "Main diagnosis is a tumour or cancer",
        "other": "Main diagnosis is another condition",
        "missing": "Main diagnosis not recorded",
    },
    "hba1c_result": {
        "not_measured": "HbA1c not tested during this stay",
        "normal": "Normal HbA1c",
        "high": "HbA1c above 7%",
        "very_high": "HbA1c above 8%",
    },
    "max_glucose_result": {
        "not_measured": "Blood sugar not tested during this stay",
        "normal": "Normal blood sugar",
        "high": "Blood sugar above 200 mg/dL",
        "very_high": "Blood sugar above 300 mg/dL",
    },
    "insulin": {
        "no": "Not on insulin",
        "steady": "Insulin dose kept the same",
        "up": "Insulin dose increased during this stay",
        "down": "Insulin dose decreased during this stay",
    },
    "sex_male": {1.0: "Male", 0.0: "Female"},
    "diabetes_medication_changed": {
        1.0: "Diabetes medicines changed during this stay",
        0.0: "Diabetes medicines not changed during this stay",
    },
    "on_diabetes_medication": {
        1.0: "Prescribed diabetes medicines",
        0.0: "Not prescribed diabetes medicines",
    },
}


def plain_phrase(feature: str, value: Any, wording: Mapping[str, str] | None = None) -> str:
    """What a feature value says about the patient, in words a ward team uses."""
    if feature == "age_years":
        if isinstance(value, float) and math.isnan(value):
            return "Age not recorded"
        low = int(value) - 5
        return f"Aged {low} to {low + 9}"
    if feature == "length_of_stay_days":
        days = int(value)
        return f"A {days}-day hospital stay"
    if feature == "race":
        if value == "missing":
            return "Race not recorded"
        return "Registered race: " + re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(value))
    if feature in _COUNT_WORDS:
        return _counted(float(value), *_COUNT_WORDS[feature])
    if feature == "sex_male" and isinstance(value, float) and math.isnan(value):
        return "Sex not recorded"
    words = _CATEGORY_WORDS.get(feature, {})
    if value in words:
        return words[value]
    # A value the wording tables do not know (a feature added later): the feature set's own
    # clinical wording (``wording``), rather than no explanation at all.
    shown = "not recorded" if isinstance(value, float) and math.isnan(value) else value
    name = (wording or {}).get(feature, feature.replace("_", " ").capitalize())
    return f"{name}: {shown}"


def plain_reason(
    feature: str, value: Any, contribution: float, wording: Mapping[str, str] | None = None
) -> dict[str, Any]:
    direction = "raises" if contribution > 0 else "lowers"
    phrase = plain_phrase(feature, value, wording)
    return {"text": f"{phrase}, which {direction} the risk", "direction": direction}


def _ranked(answer: Mapping[str, Any], top_k: int) -> list[tuple[str, float]]:
    """The ``top_k`` largest exact contributions: from the full set when the predictor sent it,
    else from its reason codes (already the largest three)."""
    full = answer.get("contributions")
    if isinstance(full, Mapping):
        pairs = [(str(k), float(v)) for k, v in full.items() if float(v) != 0.0]
    else:
        pairs = [(str(r["feature"]), float(r["contribution"])) for r in answer["reasons"]]
    pairs.sort(key=lambda p: -abs(p[1]))
    return pairs[:top_k]


def clinician_view(
    answer: Mapping[str, Any],
    instance: Mapping[str, Any],
    top_k: int,
    served: ServedInputs,
    risk_wording: str,
) -> dict[str, Any]:
    """One instance's clinician explanation from the predictor's answer for it. ``risk_wording``
    names the risk in the use case's words ("Chance of ...")."""
    values = plain_features(instance, served)
    wording = {f.name: f.clinical_wording for f in served.feature_set.features}
    reasons = [
        {"feature": feature, **plain_reason(feature, values[feature], contribution, wording)}
        for feature, contribution in _ranked(answer, top_k)
    ]
    return {
        "prediction_id": answer["prediction_id"],
        "risk": answer["risk"],
        "band": answer["band"],
        "alert": answer["alert"],
        "summary": f"{risk_wording}: {100 * float(answer['risk']):.0f}% ({answer['band']})",
        "reasons": reasons,
        "missing_inputs": answer.get("missing_inputs", []),
        "limitations": answer.get("limitations", []),
        "model_version": answer["model_version"],
    }


# --- raw inputs as numeric vectors -------------------------------------------------------------

MISSING = -1.0  # every catalogued number here is >= 0, so -1 is never a real value
MEDICATION_GROUP = "diabetes_medications"
MEDICATION_STATES = ("No", "Steady", "Up", "Down")  # how the catalog records a medication


@dataclass(frozen=True)
class RawCodec:
    """Raw instance ↔ numeric vector. Text inputs become ordinal codes (the catalog's allowed
    values, in order; free-text codes such as ``diag_1`` get the codes of the values seen, in
    order of first sight); numbers stay as they are; an absent input is ``MISSING``.

    KernelSHAP only ever swaps whole values between the instance and background rows, so every
    vector it builds decodes to a combination of real values the predictor accepts."""

    fields: tuple[str, ...]
    vocab: Mapping[str, tuple[str, ...]]  # text fields only
    integer: frozenset[str]

    @property
    def medications(self) -> tuple[str, ...]:
        """The diabetes medication inputs: those the catalog records as No/Steady/Up/Down."""
        return tuple(n for n, v in self.vocab.items() if v[:4] == MEDICATION_STATES)

    @classmethod
    def for_served(cls, served: ServedInputs) -> RawCodec:
        vocab: dict[str, tuple[str, ...]] = {}
        prior = (PRIOR_ENCOUNTERS,) if served.counts_prior_encounters else ()
        integer = set(prior)
        for field in served.fields:
            if field.spec.type == "string":
                vocab[field.name] = tuple(field.spec.allowed or ())
                continue
            rng = field.spec.range
            if rng is not None and rng.min is not None:
                lowest: float | None = rng.min
            else:
                lowest = min(float(c) for c in field.codes) if field.codes else None
            if lowest is None or lowest <= MISSING:
                raise ValueError(f"{field.name} could take the missing sentinel {MISSING}")
            if field.spec.type == "integer":
                integer.add(field.name)
        return cls((*served.inputs, *prior), vocab, frozenset(integer))

    def extended(self, instances: Sequence[Mapping[str, Any]]) -> RawCodec:
        """The same codes plus, appended, the text values these instances bring."""
        vocab = dict(self.vocab)
        for name, known in self.vocab.items():
            new = [
                str(v)
                for v in dict.fromkeys(i.get(name) for i in instances)
                if v is not None and str(v) not in known
            ]
            if new:
                vocab[name] = (*known, *new)
        return RawCodec(self.fields, vocab, self.integer)

    def encode(self, instances: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.full((len(instances), len(self.fields)), MISSING)
        index = {name: {v: i for i, v in enumerate(values)} for name, values in self.vocab.items()}
        for row, instance in enumerate(instances):
            for col, name in enumerate(self.fields):
                value = instance.get(name)
                if value is None:
                    continue
                if name in index:
                    if str(value) not in index[name]:
                        raise KeyError(f"{name}: a value the codec has no code for")
                    out[row, col] = index[name][str(value)]
                else:
                    out[row, col] = float(value)
        return out

    def decode(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for vector in np.atleast_2d(matrix):
            instance: dict[str, Any] = {}
            for name, value in zip(self.fields, vector, strict=True):
                if value == MISSING:
                    continue  # absent, as the client would have sent it
                if name in self.vocab:
                    instance[name] = self.vocab[name][int(value)]
                elif name in self.integer:
                    instance[name] = int(value)
                else:
                    instance[name] = float(value)
            rows.append(instance)
        return rows

    def groups(self) -> tuple[list[str], list[list[int]]]:
        """One group per input, except the 23 diabetes medications: one group, so KernelSHAP
        samples 21 players instead of 43 and the medication regimen is judged as a whole."""
        names: list[str] = []
        groups: list[list[int]] = []
        medications = [self.fields.index(m) for m in self.medications]
        for col, name in enumerate(self.fields):
            if name in self.medications:
                if col == medications[0]:
                    names.append(MEDICATION_GROUP)
                    groups.append(medications)
                continue
            names.append(name)
            groups.append([col])
        return names, groups


# --- the background: real training-period encounters ------------------------------------------


def training_background(
    raw_tables: Mapping[str, pd.DataFrame],
    spec: SourceSpec,
    policy: SplitPolicy,
    rows: int,
    served: ServedInputs,
) -> list[dict[str, Any]]:
    """``rows`` real encounters of the training period, evenly spaced in time, as raw request
    instances. Deterministic: the same extract and policy give the same rows (see
    ``example_requests.period_instances``)."""

    def evenly(train: pd.DataFrame) -> pd.DataFrame:
        return train.iloc[np.unique(np.linspace(0, len(train) - 1, rows).round().astype(int))]

    return period_instances(served, raw_tables, spec, policy, "train", evenly)


def load_training_background(
    served: ServedInputs, policy: SplitPolicy, rows: int, extract: Path | None = None
) -> list[dict[str, Any]]:
    """The background from an extract in the catalog's layout (default: the bundled one)."""
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.sources.extract import default_extract, read_extract

    source = served.feature_set.source
    spec = load_catalog().source(source)
    path = extract or default_extract(source, spec)
    return training_background(read_extract(path, spec), spec, policy, rows, served)


# --- technical view ----------------------------------------------------------------------------

RiskOf = Callable[[list[dict[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class RawAttribution:
    base_value: float  # mean risk over the background
    risk: float  # the risk explained: base_value + Σ attributions
    attributions: dict[str, float]  # input (or the medication group) → probability points
    inputs: Mapping[str, tuple[str, ...]]  # each attributed name → the raw inputs it covers


class RawKernelShap:
    """KernelSHAP over the raw inputs with a real-encounter background.

    ``risk_of`` scores raw instances (the predictor); it is called with every coalition
    KernelSHAP builds (nsamples × background rows per instance, duplicates removed). Not
    thread-safe: alibi/shap keep per-explanation state, so explain one instance at a time."""

    def __init__(
        self,
        codec: RawCodec,
        background: Sequence[Mapping[str, Any]],
        risk_of: RiskOf,
        nsamples: int,
        seed: int = 0,
    ) -> None:
        from alibi.explainers import KernelShap

        self._base_codec = codec.extended(background)
        self._codec = self._base_codec
        self._risk_of = risk_of
        self.nsamples = nsamples
        self.seed = seed
        self.group_names, groups = self._base_codec.groups()
        fields = self._base_codec.fields
        self.inputs = {
            n: tuple(fields[i] for i in g) for n, g in zip(self.group_names, groups, strict=True)
        }
        self._explainer = KernelShap(
            self._predict, link="identity", feature_names=self.group_names, seed=seed
        )
        self._explainer.fit(
            self._base_codec.encode(background), group_names=self.group_names, groups=groups
        )
        self.base_value = float(np.ravel(self._explainer.expected_value)[0])

    def _predict(self, matrix: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(np.atleast_2d(matrix), axis=0, return_inverse=True)
        risk = np.asarray(self._risk_of(self._codec.decode(unique)), dtype="float64")
        return risk[np.ravel(inverse)].reshape(-1, 1)

    def explain(self, instance: Mapping[str, Any]) -> RawAttribution:
        # A free-text code the background lacks (a rarer diagnosis) gets a code for this call.
        self._codec = self._base_codec.extended([instance])
        try:
            np.random.seed(self.seed)  # shap samples coalitions from the global stream
            explanation = self._explainer.explain(
                self._codec.encode([instance]), nsamples=self.nsamples, l1_reg=False, silent=True
            )
        finally:
            self._codec = self._base_codec
        values = np.asarray(explanation.shap_values[0])[0]
        risk = float(np.ravel(explanation.data["raw"]["raw_prediction"])[0])
        return RawAttribution(
            base_value=self.base_value,
            risk=risk,
            attributions={n: float(v) for n, v in zip(self.group_names, values, strict=True)},
            inputs=self.inputs,
        )


def _raw_value(inputs: Sequence[str], instance: Mapping[str, Any]) -> Any:
    if len(inputs) > 1:
        return {name: instance.get(name) for name in inputs}
    return instance.get(inputs[0], 0 if inputs[0] == PRIOR_ENCOUNTERS else None)


def _exact_part(
    answer: Mapping[str, Any], instance: Mapping[str, Any], served: ServedInputs
) -> dict[str, Any]:
    """The predictor's exact TreeSHAP (XGBoost pred_contribs) for this instance, with the
    feature values behind each contribution."""
    full = answer.get("contributions")
    if isinstance(full, Mapping):
        contributions = {str(k): float(v) for k, v in full.items()}
        complete = True
    else:
        contributions = {str(r["feature"]): float(r["contribution"]) for r in answer["reasons"]}
        complete = False
    ranked = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))
    values = plain_features(instance, served)
    return {
        "method": "exact TreeSHAP (XGBoost pred_contribs), as computed by the predictor",
        "scale": "calibrated log-odds: baseline + sum of contributions = logit(risk)",
        "baseline": answer.get("baseline"),
        "complete": complete,
        "contributions": [
            {"feature": k, "value": jsonable(values.get(k)), "contribution": v} for k, v in ranked
        ],
    }


def technical_view(
    answer: Mapping[str, Any],
    instance: Mapping[str, Any],
    raw: RawAttribution | None,
    settings: Mapping[str, Any],
    served: ServedInputs,
) -> dict[str, Any]:
    """One instance's audit explanation: KernelSHAP over raw inputs (``raw``; None with the
    permissive licence profile) and the predictor's exact TreeSHAP contributions."""
    missing = set(answer.get("missing_inputs", []))
    out: dict[str, Any] = {
        "prediction_id": answer["prediction_id"],
        "risk": answer["risk"],
        "model_version": answer["model_version"],
        "missing_inputs": sorted(missing),
        "tree_shap": _exact_part(answer, instance, served),
    }
    if raw is not None:
        attributions = sorted(raw.attributions.items(), key=lambda kv: -abs(kv[1]))
        out["kernel_shap"] = {
            "method": "KernelSHAP (alibi.explainers.KernelShap) over the raw request inputs",
            "scale": "probability: base_value + sum of attributions = risk",
            "base_value": raw.base_value,
            "explained_risk": raw.risk,
            "attributions": [
                {
                    "input": name,
                    "value": _raw_value(raw.inputs[name], instance),
                    "missing": name in missing,
                    "attribution": value,
                }
                for name, value in attributions
            ],
            **settings,
        }
    return out
