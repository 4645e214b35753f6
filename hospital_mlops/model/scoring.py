"""Scoring one request: validate raw clinical inputs, build features with the pipeline's own
feature code, and answer per instance with risk, band, alert, reasons and limitations.

The input contract is the served feature set's (``features.served_inputs``): for a set on raw
catalogued columns, the data catalog's types, allowed values, code tables and physiologic ranges
in the declared unit, so serving accepts exactly what the pipeline validated; for any other set,
its feature definitions. Every problem becomes a ``FieldError`` naming the instance and the
field; nothing here raises anything else for bad input. The KServe predictor is a thin adapter
over this module.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.normalize import cast_column
from hospital_mlops.features import InputField, ServedInputs
from hospital_mlops.features.served import PRIOR_ENCOUNTERS
from hospital_mlops.model.reasons import calibrated, reason_codes_of_rows
from hospital_mlops.model.train import RiskModel

MAX_INSTANCES = 100
MAX_TEXT = 64
PRIOR_ENCOUNTERS_MAX = 500
OBSERVATION_TIMES = "observation_times"  # optional: when each input was observed (ISO 8601)
# Optional: the encounter's token from the ingest layer (keyed HMAC), never a raw identifier. It
# is not a model input; it lets outcomes and clinicians' feedback join the logged prediction.
ENCOUNTER_TOKEN = "encounter_token"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
STALE_AFTER = timedelta(hours=24)  # inputs older than this get a limitation: re-score
CLOCK_SKEW = timedelta(minutes=5)  # observation times further in the future are refused


@dataclass(frozen=True)
class FieldError:
    instance: int | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidRequest(ValueError):
    """One or more field-level problems; rendered as a 400 listing every one."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        where = f"instances[{first.instance}]." if first.instance is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}{first.field}: {first.message}{more}")


def _check_value(field: InputField, value: Any) -> tuple[Any, str | None]:
    spec = field.spec
    if spec.type in ("integer", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return None, "must be a finite number"
        if spec.type == "integer":
            if float(value) != int(value):
                return None, f"must be a whole number, got {value!r}"
            value = int(value)
        if field.codes is not None and str(value) not in field.codes:
            return None, f"{value} is not a code of the {spec.code_table} code table"
        rng = spec.range
        if rng is not None and (
            (rng.min is not None and value < rng.min) or (rng.max is not None and value > rng.max)
        ):
            unit = f" {spec.unit}" if spec.unit else ""
            return None, f"{value}{unit} is outside the plausible range {rng.min}–{rng.max}{unit}"
        return value, None
    if not isinstance(value, str):
        return None, f"must be a string, got {type(value).__name__}"
    if len(value) > MAX_TEXT:
        return None, f"is longer than {MAX_TEXT} characters"
    if spec.allowed is not None and value not in spec.allowed:
        shown = spec.allowed if len(spec.allowed) <= 12 else [*spec.allowed[:12], "…"]
        return None, f"{value!r} is not one of {shown}"
    return value, None


@dataclass(frozen=True)
class ValidatedRequest:
    rows: list[dict[str, Any]]  # per instance: input name → checked value (None when absent)
    prior_encounters: np.ndarray
    missing: list[list[str]]  # per instance: optional inputs that were absent
    newest_observation: list[datetime | None]  # per instance, when observation times were sent
    fields: tuple[InputField, ...]
    encounter_tokens: list[str | None]  # per instance, when the client sent one

    @cached_property
    def encounters(self) -> pd.DataFrame:
        """The rows as a typed frame (catalog dtypes), for the vectorized feature code. Built
        only when asked for: scoring reads ``rows``."""
        raw = pd.DataFrame(self.rows, columns=[f.name for f in self.fields])
        return pd.DataFrame({f.name: cast_column(raw[f.name], f.spec) for f in self.fields})


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _newest_observation(
    i: int, times: Any, known: set[str], now: datetime, errors: list[FieldError]
) -> datetime | None:
    """The newest of the instance's observation times; every bad entry is a field error."""
    if times is None:
        return None
    if not isinstance(times, dict) or not times or len(times) > len(known):
        errors.append(
            FieldError(i, OBSERVATION_TIMES, "must be an object of input name → ISO 8601 time")
        )
        return None
    newest: datetime | None = None
    for name, value in times.items():
        where = f"{OBSERVATION_TIMES}.{str(name)[:MAX_TEXT]}"
        if name not in known:
            errors.append(FieldError(i, where, "is not an input of this model"))
            continue
        parsed = _parse_time(value)
        if parsed is None:
            errors.append(FieldError(i, where, "must be an ISO 8601 time with a UTC offset"))
        elif parsed > now + CLOCK_SKEW:
            errors.append(FieldError(i, where, "is in the future"))
        elif newest is None or parsed > newest:
            newest = parsed
    return newest


def validate_instances(
    instances: Any,
    served: ServedInputs,
    *,
    max_instances: int = MAX_INSTANCES,
    now: datetime | None = None,
) -> ValidatedRequest:
    """Raw instances → typed encounters, earlier-encounter counts, missing optional inputs and
    the newest observation time. Raises ``InvalidRequest`` listing every problem."""
    if not isinstance(instances, list):
        raise InvalidRequest([FieldError(None, "instances", "must be a list of objects")])
    if not instances:
        raise InvalidRequest([FieldError(None, "instances", "must not be empty")])
    if len(instances) > max_instances:
        raise InvalidRequest(
            [FieldError(None, "instances", f"at most {max_instances} per request")]
        )
    now = now or datetime.now(UTC)
    fields = served.fields
    inputs = {f.name for f in fields}
    if served.counts_prior_encounters:
        inputs.add(PRIOR_ENCOUNTERS)
    known = inputs | {OBSERVATION_TIMES, ENCOUNTER_TOKEN}
    errors: list[FieldError] = []
    rows: list[dict[str, Any]] = []
    prior: list[int] = []
    missing: list[list[str]] = []
    newest: list[datetime | None] = []
    tokens: list[str | None] = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            errors.append(FieldError(i, "<instance>", "must be an object of named inputs"))
            continue
        for name in sorted(set(map(str, instance)) - known)[:10]:
            errors.append(FieldError(i, name[:MAX_TEXT], "is not an input of this model"))
        row: dict[str, Any] = {}
        absent: list[str] = []
        for field in fields:
            value = instance.get(field.name)
            if value is None:
                if field.required:
                    errors.append(FieldError(i, field.name, "is required"))
                else:
                    absent.append(field.name)
                row[field.name] = None
                continue
            checked, problem = _check_value(field, value)
            if problem:
                errors.append(FieldError(i, field.name, problem))
            row[field.name] = checked
        count = instance.get(PRIOR_ENCOUNTERS, 0)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not (0 <= count <= PRIOR_ENCOUNTERS_MAX)
        ):
            errors.append(
                FieldError(
                    i, PRIOR_ENCOUNTERS, f"must be a whole number from 0 to {PRIOR_ENCOUNTERS_MAX}"
                )
            )
            count = 0
        newest.append(_newest_observation(i, instance.get(OBSERVATION_TIMES), inputs, now, errors))
        tokens.append(_encounter_token(i, instance.get(ENCOUNTER_TOKEN), errors))
        rows.append(row)
        prior.append(int(count))
        missing.append(absent)
    if errors:
        raise InvalidRequest(errors)
    return ValidatedRequest(rows, np.asarray(prior, dtype="int64"), missing, newest, fields, tokens)


def _encounter_token(i: int, value: Any, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and TOKEN_PATTERN.fullmatch(value):
        return value
    errors.append(
        FieldError(
            i,
            ENCOUNTER_TOKEN,
            "must be the encounter's token from the ingest layer (16-128 letters, digits, '-' "
            "or '_'), never a raw identifier",
        )
    )
    return None


def band_of(risk: float, threshold: float) -> str:
    """Three bands around the alert threshold: the alert itself is the 'high' band."""
    if risk >= threshold:
        return "high"
    if risk >= threshold / 2:
        return "moderate"
    return "low"


def _freshness(newest: datetime | None, now: datetime) -> dict[str, Any] | None:
    if newest is None:
        return None
    age = max((now - newest).total_seconds(), 0.0)
    return {
        "newest_observation": newest.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "age_seconds": round(age, 1),
        "stale": age > STALE_AFTER.total_seconds(),
    }


def score(
    instances: Any,
    served: ServedInputs,
    model: RiskModel,
    threshold: float,
    model_version: str,
    *,
    max_instances: int = MAX_INSTANCES,
    now: datetime | None = None,
    contributions: bool = False,
) -> list[dict[str, Any]]:
    """The full answer per instance (the v1 ``predictions`` list). ``contributions`` adds every
    feature's exact TreeSHAP contribution and the baseline (the explainer's audit view)."""
    now = now or datetime.now(UTC)
    fs = served.feature_set
    request = validate_instances(instances, served, max_instances=max_instances, now=now)
    # Row-wise twins of the pipeline's frame code (held equal by tests): a request is a few rows,
    # and pandas costs milliseconds per call whatever the size.
    features = [
        served.feature_row(row, int(prior))
        for row, prior in zip(request.rows, request.prior_encounters, strict=True)
    ]
    risk, raw = model.row_scorer(fs).risk_and_contributions(features)
    attribution = calibrated(raw, model.calibration)
    reasons = reason_codes_of_rows(attribution, features, fs)
    outside = [served.outside_row(row) for row in request.rows]
    scored_at = now.isoformat().replace("+00:00", "Z")
    out = []
    for i in range(len(features)):
        limitations = []
        if outside[i]:
            limitations.append(served.outside_use)
        if request.missing[i]:
            limitations.append("some inputs were not recorded; see missing_inputs")
        freshness = _freshness(request.newest_observation[i], now)
        if freshness and freshness["stale"]:
            hours = freshness["age_seconds"] / 3600
            limitations.append(
                f"the newest input is {hours:.0f} hours old; re-score with current data"
            )
        out.append(
            {
                "prediction_id": str(uuid.uuid4()),
                "risk": round(float(risk[i]), 6),
                "band": band_of(float(risk[i]), threshold),
                "alert": bool(risk[i] >= threshold and not outside[i]),
                "threshold": round(threshold, 6),
                "reasons": [r.as_dict() for r in reasons[i]],
                "missing_inputs": request.missing[i],
                "data_freshness": freshness,
                "scored_at": scored_at,
                "model_version": model_version,
                "limitations": limitations,
            }
        )
        if contributions:
            out[-1]["contributions"] = {
                f.name: round(float(c), 6)
                for f, c in zip(fs.features, attribution.contributions[i], strict=True)
            }
            out[-1]["baseline"] = round(float(attribution.baseline[i]), 6)
    return out


# --- Open Inference Protocol (v2): columnar tensors ↔ the same instances and answers --------

V2_NUMBER_TYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP32", "FP64"}
)
V2_JSON_OUTPUTS = ("reasons", "missing_inputs", "limitations", "data_freshness")
# The Open Inference Protocol has no null in tensor data. An optional input missing for every row
# is an omitted tensor; missing for some rows of a batch, its tensor's parameters name those rows
# (zero-based, comma-separated: a string, as OIP's gRPC parameters allow), and the values sent at
# them (any value of the tensor's datatype) are not read.
MISSING_ROWS = "missing_rows"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: Sequence[int]
    data: Any
    parameters: Mapping[str, Any] | None = None


def _missing_rows(t: Tensor, rows: int, where: str) -> set[int] | FieldError:
    """The rows ``t.parameters.missing_rows`` names, or the field error saying what is wrong."""
    value = (t.parameters or {}).get(MISSING_ROWS)
    if value is None:
        return set()
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    parts = [p.strip() for p in text.split(",")] if text is not None else []
    if not parts or not all(p.isdigit() for p in parts):
        return FieldError(
            None, f"{where}.parameters.{MISSING_ROWS}",
            'must list zero-based row numbers, comma-separated (e.g. "0,3")',
        )  # fmt: skip
    named = {int(p) for p in parts}
    if max(named) >= rows:
        return FieldError(
            None, f"{where}.parameters.{MISSING_ROWS}", f"names row {max(named)} of {rows} rows"
        )
    return named


def _flat(data: Any) -> list[Any] | None:
    """Row-major data as a flat list ([[1], [2]] and [1, 2] both give [1, 2])."""
    if not isinstance(data, list):
        return None
    if all(isinstance(v, list) for v in data) and data:
        if not all(len(v) == 1 for v in data):
            return None
        return [v[0] for v in data]
    return data


def instances_from_v2(tensors: Sequence[Tensor], *, max_instances: int = MAX_INSTANCES) -> Any:
    """One tensor per input, one row per encounter → v1 instances; shape and type problems are
    field errors naming the input. ``observation_times`` rows are JSON objects in a BYTES
    tensor. Values are then checked by ``validate_instances`` like any v1 request."""
    if not tensors:
        raise InvalidRequest([FieldError(None, "inputs", "must not be empty")])
    errors: list[FieldError] = []
    columns: dict[str, list[Any]] = {}
    for t in tensors:
        where = f"inputs.{str(t.name)[:MAX_TEXT]}"
        shape = list(t.shape) if isinstance(t.shape, list | tuple) else []
        if not (1 <= len(shape) <= 2) or (len(shape) == 2 and shape[1] != 1):
            errors.append(FieldError(None, where, "shape must be [rows] or [rows, 1]"))
            continue
        if not isinstance(shape[0], int) or not (1 <= shape[0] <= max_instances):
            errors.append(FieldError(None, where, f"rows must be from 1 to {max_instances}"))
            continue
        values = _flat(t.data)
        if values is None or len(values) != shape[0]:
            errors.append(FieldError(None, where, f"data must hold {shape[0]} values"))
            continue
        if any(v is None for v in values):
            errors.append(
                FieldError(
                    None, where,
                    "null is not tensor data in the Open Inference Protocol: omit the input's "
                    f"tensor when no row has it, or name the rows without it in "
                    f"parameters.{MISSING_ROWS}",
                )
            )  # fmt: skip
            continue
        missing = _missing_rows(t, shape[0], where)
        if isinstance(missing, FieldError):
            errors.append(missing)
            continue
        if t.datatype not in V2_NUMBER_TYPES and t.datatype != "BYTES":
            errors.append(FieldError(None, where, "datatype must be BYTES or a number type"))
            continue
        if t.name in columns:
            errors.append(FieldError(None, where, "is given twice"))
            continue
        if t.name == OBSERVATION_TIMES:
            values = [_json_object(v) for v in values]
        columns[t.name] = [None if i in missing else v for i, v in enumerate(values)]
    rows = {len(v) for v in columns.values()}
    if not errors and len(rows) > 1:
        errors.append(FieldError(None, "inputs", "every input must have the same number of rows"))
    if errors:
        raise InvalidRequest(errors)
    n = rows.pop()
    # a missing row's input is absent from its instance, as in a v1 request that omits it
    return [
        {name: values[i] for name, values in columns.items() if values[i] is not None}
        for i in range(n)
    ]


def instances_from_body(body: Any, *, max_instances: int = MAX_INSTANCES) -> Any:
    """A v1 (``instances``) or v2 (``inputs`` tensors) JSON body → v1 instances. Used by every
    reader of logged requests (the drift detector, audits) so both protocols count the same."""
    if isinstance(body, dict) and "instances" in body:
        return body["instances"]
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        tensors = []
        for i, t in enumerate(body["inputs"]):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise InvalidRequest([FieldError(None, f"inputs[{i}]", "must be a named tensor")])
            parameters = t.get("parameters")
            tensors.append(
                Tensor(
                    t["name"], str(t.get("datatype", "")), t.get("shape", []), t.get("data"),
                    parameters if isinstance(parameters, dict) else None,
                )
            )  # fmt: skip
        return instances_from_v2(tensors, max_instances=max_instances)
    raise InvalidRequest(
        [FieldError(None, "instances", "the body needs 'instances' (v1) or 'inputs' (v2)")]
    )


def _json_object(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > 20 * MAX_TEXT * 4:
        return value  # validate_instances reports it
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


# every output tensor, in order, with its datatype (structured fields as JSON text)
V2_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("prediction_id", "BYTES"),
    ("risk", "FP64"),
    ("band", "BYTES"),
    ("alert", "BOOL"),
    ("threshold", "FP64"),
    ("model_version", "BYTES"),
    ("scored_at", "BYTES"),
    *((key, "BYTES") for key in V2_JSON_OUTPUTS),
)
_V2_INPUT_TYPES = {"string": "BYTES", "integer": "INT64", "float": "FP64"}


def v2_outputs(answers: list[dict[str, Any]]) -> list[Tensor]:
    """The per-instance answers as columnar output tensors (structured fields as JSON text)."""
    n = len(answers)

    def column(key: str) -> list[Any]:
        if key in V2_JSON_OUTPUTS:
            return [json.dumps(a[key], separators=(",", ":")) for a in answers]
        return [a[key] for a in answers]

    return [Tensor(name, datatype, [n], column(name)) for name, datatype in V2_OUTPUTS]


def v2_input_metadata(served: ServedInputs) -> list[dict[str, Any]]:
    """OIP model metadata for the inputs: every tensor a request may carry, one row per
    encounter (shape ``[-1]``: any number of rows). Which are required, and each one's codes and
    range, are in the request contract (docs/serving.md); OIP metadata has no place for them."""
    tensors = [
        {"name": f.name, "datatype": _V2_INPUT_TYPES.get(f.spec.type, "BYTES"), "shape": [-1]}
        for f in served.fields
    ]
    if served.counts_prior_encounters:
        tensors.append({"name": PRIOR_ENCOUNTERS, "datatype": "INT64", "shape": [-1]})
    tensors += [
        {"name": OBSERVATION_TIMES, "datatype": "BYTES", "shape": [-1]},
        {"name": ENCOUNTER_TOKEN, "datatype": "BYTES", "shape": [-1]},
    ]
    return tensors


def v2_output_metadata() -> list[dict[str, Any]]:
    """OIP model metadata for the outputs: one row per encounter scored."""
    return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in V2_OUTPUTS]
