"""Normalize a raw extract: types, canonical IDs and units, UTC times, patient merges, PHI tokens.

Raw identifiers stop here. Direct identifiers are replaced by keyed HMAC-SHA256 tokens (or
dropped), quasi-identifiers are generalized, and nothing downstream of this module ever sees a raw
MRN, name, encounter number or birth date.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import ColumnSpec, MeasurementTable, SourceSpec, TableSpec

HMAC_KEY_ENV = "HMLOPS_HMAC_KEY"
HMAC_KEY_FILE_ENV = "HMLOPS_HMAC_KEY_FILE"
# During a key rotation: the key being retired, still needed to read what it tokenized
# (docs/runbooks/hmac-key-rotation.md). A file may hold several, one per line.
PREVIOUS_KEY_ENV = "HMLOPS_HMAC_PREVIOUS_KEY"
PREVIOUS_KEY_FILE_ENV = "HMLOPS_HMAC_PREVIOUS_KEY_FILE"
# Labelled as what it is: tokens made with it protect nothing. Only `--demo-key` selects it.
DEMO_HMAC_KEY = "DEMO-KEY-hospital-mlops-not-for-real-PHI-0000000000"
MIN_KEY_BYTES = 32
TOKEN_HEX_CHARS = 32
AGE_CAP_YEARS = 90  # HIPAA Safe Harbor: ages over 89 are reported as 90+
FINGERPRINT = "person_fingerprint"
RECORDING_DELAY = "recording_delay_hours"
WITHIN_WINDOW = "within_encounter_window"
ENCOUNTER_ORDER = "encounter_order"


class MissingHmacKey(RuntimeError):
    """No tokenization key was provided; the run must not start."""


class NormalizeError(ValueError):
    """The extract cannot be normalized (e.g. an identifier that has no digits to standardize)."""


@dataclass(frozen=True)
class HmacKey:
    secret: bytes
    demo: bool

    @property
    def key_id(self) -> str:
        """A fingerprint of the key for manifests: which key made these tokens, not the key."""
        return ("demo-" if self.demo else "") + hashlib.sha256(self.secret).hexdigest()[:12]


@dataclass(frozen=True)
class HmacKeyring:
    """The key that tokenizes now, and the keys being retired (read only: they find what was
    tokenized before a rotation; nothing new is made with them)."""

    current: HmacKey
    previous: tuple[HmacKey, ...] = ()

    def by_id(self, key_id: str) -> HmacKey:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        known = ", ".join(k.key_id for k in (self.current, *self.previous))
        raise MissingHmacKey(
            f"no key with id {key_id} in the keyring (it holds {known}): set "
            f"{PREVIOUS_KEY_ENV} or {PREVIOUS_KEY_FILE_ENV} to the key being retired"
        )


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MissingHmacKey(f"cannot read the HMAC key file {path}: {exc.strerror}") from exc


def _checked_key(value: str, what: str) -> HmacKey:
    secret = value.encode()
    if len(secret) < MIN_KEY_BYTES:
        raise MissingHmacKey(
            f"the {what} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are required"
        )
    return HmacKey(secret=secret, demo=value == DEMO_HMAC_KEY)


def load_hmac_key(env: Mapping[str, str] | None = None) -> HmacKey:
    """Read the tokenization key from the env var or a mounted Secret file; refuse without one."""
    env = os.environ if env is None else env
    value = env.get(HMAC_KEY_ENV, "")
    if not value and env.get(HMAC_KEY_FILE_ENV):
        value = _read_key_file(Path(env[HMAC_KEY_FILE_ENV])).strip()
    if not value:
        raise MissingHmacKey(
            f"no PHI tokenization key: set {HMAC_KEY_ENV} (or {HMAC_KEY_FILE_ENV} to a mounted "
            "Kubernetes Secret), or pass --demo-key to use the labelled demo key on non-PHI data"
        )
    return _checked_key(value, "PHI tokenization key")


def load_hmac_keyring(env: Mapping[str, str] | None = None) -> HmacKeyring:
    """The current key (as ``load_hmac_key``) and any previous keys from
    ``HMLOPS_HMAC_PREVIOUS_KEY`` or the lines of ``HMLOPS_HMAC_PREVIOUS_KEY_FILE``."""
    env = os.environ if env is None else env
    current = load_hmac_key(env)
    values = [env[PREVIOUS_KEY_ENV]] if env.get(PREVIOUS_KEY_ENV) else []
    if env.get(PREVIOUS_KEY_FILE_ENV):
        text = _read_key_file(Path(env[PREVIOUS_KEY_FILE_ENV]))
        values += [line.strip() for line in text.splitlines() if line.strip()]
    previous: list[HmacKey] = []
    for n, value in enumerate(values, start=1):
        key = _checked_key(value, f"previous HMAC key #{n}")
        if key.key_id == current.key_id:
            raise MissingHmacKey(
                f"previous HMAC key #{n} is the current key ({key.key_id}): a rotation needs a "
                "new current key"
            )
        if all(key.key_id != k.key_id for k in previous):
            previous.append(key)
    return HmacKeyring(current, tuple(previous))


def map_distinct(values: pd.Series, fn: Callable[[np.ndarray], np.ndarray]) -> pd.Series:
    """Apply ``fn`` to each distinct non-null value once and broadcast back (IDs repeat across
    millions of rows; the work is per distinct value). Nulls stay null."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True, sort=False)
    mapped = fn(np.asarray(uniques, dtype=object))
    out = np.full(len(values), None, dtype=object)
    mask = codes >= 0
    out[mask] = mapped[codes[mask]]
    return pd.Series(out, index=values.index, name=values.name)


def map_jointly(
    columns: list[pd.Series], fn: Callable[[np.ndarray], np.ndarray]
) -> list[pd.Series]:
    """``map_distinct`` over several columns at once: an encounter ID that appears in
    encounters, vitals and labs is processed once, not three times."""
    combined = pd.concat(
        [pd.Series(c.to_numpy(dtype=object), dtype=object) for c in columns], ignore_index=True
    )
    mapped = map_distinct(combined, fn).to_numpy()
    out, start = [], 0
    for column in columns:
        end = start + len(column)
        out.append(pd.Series(mapped[start:end], index=column.index, name=column.name))
        start = end
    return out


_SHA256_BLOCK = 64


def _hmac_hex(secret: bytes, prefix: bytes, values: list[object]) -> list[str]:
    """HMAC-SHA256(secret, prefix + value) per value, truncated to the token length.

    RFC 2104 with the key pads and the shared prefix hashed once and their states copied per
    value: the same digest as ``hmac.digest`` at half the cost over millions of IDs (a test
    holds the two equal).
    """
    if len(secret) > _SHA256_BLOCK:
        secret = hashlib.sha256(secret).digest()
    padded = secret.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    inner.update(prefix)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    out = []
    for v in values:
        h = inner.copy()
        h.update(str(v).encode())
        o = outer.copy()
        o.update(h.digest())
        out.append(o.hexdigest()[:TOKEN_HEX_CHARS])
    return out


def token_function(key: HmacKey, namespace: str) -> Callable[[np.ndarray], np.ndarray]:
    """Keyed HMAC-SHA256 tokens (128 bits, hex), namespaced so one value gets different tokens
    in different roles. Serial on purpose: at ~1.2 µs per value a worker pool's start-up and
    result pickling cost more than the second core saves (measured on 1M IDs)."""
    prefix = f"{namespace}\x1f".encode()
    secret = key.secret

    def tokens(uniques: np.ndarray) -> np.ndarray:
        return np.array(_hmac_hex(secret, prefix, uniques.tolist()), dtype=object)

    return tokens


def tokenize(values: pd.Series, key: HmacKey, namespace: str) -> pd.Series:
    return map_distinct(values, token_function(key, namespace))


@dataclass
class NormalizeReport:
    """What normalize changed, for the manifest and the report (counts only, never values)."""

    converted_units: dict[str, int] = field(default_factory=dict)
    unrecognized_units: dict[str, int] = field(default_factory=dict)
    merged_mrns: int = 0
    merged_patient_rows_dropped: int = 0
    standardized_ids: dict[str, int] = field(default_factory=dict)
    tokenized_columns: list[str] = field(default_factory=list)
    dropped_identifiers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- types -------------------------------------------------------------------------------------


def cast_column(series: pd.Series, spec: ColumnSpec) -> pd.Series:
    """Cast one column to its catalog type. The raw gate has already proved it castable."""
    if spec.type == "integer":
        return pd.to_numeric(series, errors="raise").astype("Int64")
    if spec.type == "float":
        return pd.to_numeric(series, errors="raise").astype("float64")
    if spec.type in ("timestamp", "date"):
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            return series.dt.tz_convert("UTC")
        return pd.to_datetime(series, errors="raise", format="ISO8601")
    if spec.type == "boolean":
        lowered = series.astype("string").str.lower()
        return lowered.map({"true": True, "false": False, "1": True, "0": False}).astype("boolean")
    return pd.Series(series.to_numpy(dtype=object, na_value=None), index=series.index)


def cast_types(df: pd.DataFrame, table: TableSpec) -> pd.DataFrame:
    return pd.DataFrame({c: cast_column(df[c], table.columns[c]) for c in table.columns})


# --- identifiers and merges --------------------------------------------------------------------


def _canonical_ids(pattern: str, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    compiled = re.compile(pattern)

    def canonical(uniques: np.ndarray) -> np.ndarray:
        out = np.empty(len(uniques), dtype=object)
        bad = 0
        for i, raw in enumerate(uniques):
            match = compiled.search(str(raw))
            if match is None:
                bad += 1
                out[i] = None
            else:
                out[i] = fmt.format(int(match.group(1)))
        if bad:
            raise NormalizeError(
                f"{bad} distinct identifier values have no digits matching {pattern!r}; "
                "they cannot be standardized"
            )
        return out

    return canonical


def standardize_ids(
    tables: dict[str, pd.DataFrame], spec: SourceSpec, report: NormalizeReport
) -> dict[str, pd.DataFrame]:
    """Site spellings of one identifier become one canonical form, jointly across tables."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for tname, table in spec.tables.items():
        for column, rule in table.id_standardization.items():
            groups.setdefault((column, rule.digits_pattern, rule.canonical_format), []).append(
                tname
            )
    out = dict(tables)
    for (column, pattern, fmt), tnames in groups.items():
        originals = [out[t][column] for t in tnames]
        for tname, original, standardized in zip(
            tnames, originals, map_jointly(originals, _canonical_ids(pattern, fmt)), strict=True
        ):
            changed = int((standardized != original).sum())
            report.standardized_ids[column] = report.standardized_ids.get(column, 0) + changed
            out[tname] = out[tname].assign(**{column: standardized})
    return out


def merge_map(merges: pd.DataFrame) -> dict[str, str]:
    """Resolve retired → surviving MRN chains (A→B, B→C gives A→C)."""
    direct = dict(zip(merges["retired_mrn"], merges["surviving_mrn"], strict=True))
    resolved: dict[str, str] = {}
    for retired in direct:
        target, hops = direct[retired], 0
        while target in direct and hops < len(direct):
            target, hops = direct[target], hops + 1
        resolved[retired] = target
    return resolved


def apply_patient_merges(
    tables: dict[str, pd.DataFrame], spec: SourceSpec, report: NormalizeReport
) -> dict[str, pd.DataFrame]:
    merges = tables.get("patient_merges")
    if merges is None or merges.empty:
        return tables
    mapping = merge_map(merges)
    report.merged_mrns = len(mapping)
    out = dict(tables)
    for tname, df in tables.items():
        if tname == "patient_merges":
            continue
        table = spec.tables[tname]
        for col, cspec in table.columns.items():
            if cspec.token == "patient_token":
                surviving = df[col].map(mapping)
                df = df.assign(**{col: surviving.where(surviving.notna(), df[col])})
        if tname == "patients":
            before = len(df)
            df = df.drop_duplicates(subset=table.primary_key, keep="first")
            report.merged_patient_rows_dropped = before - len(df)
        out[tname] = df
    return out


# --- units and time ----------------------------------------------------------------------------


def convert_units(
    df: pd.DataFrame, measurements: MeasurementTable, report: NormalizeReport
) -> pd.DataFrame:
    """Convert declared non-canonical units through the catalog's conversion table.

    Undeclared changes (a value in mmol/L labelled mg/dL) cannot be seen here; the validate
    layer's unit-plausibility check catches those.
    """
    values = df[measurements.value_column].to_numpy(dtype="float64", copy=True)
    units = df[measurements.unit_column].astype(object).to_numpy(copy=True)
    codes = df[measurements.code_column].to_numpy()
    for code, mspec in measurements.codes.items():
        of_code = codes == code
        for unit, conv in mspec.accepted_units.items():
            hit = of_code & (units == unit)
            n = int(hit.sum())
            if n:
                values[hit] = values[hit] * conv.factor + conv.offset
                units[hit] = mspec.canonical_unit
                report.converted_units[f"{code}:{unit}->{mspec.canonical_unit}"] = n
        unknown = of_code & (units != mspec.canonical_unit)
        if unknown.any():
            report.unrecognized_units[code] = int(unknown.sum())
    return df.assign(**{measurements.value_column: values, measurements.unit_column: units})


def localize_site_times(
    df: pd.DataFrame, columns: list[str], site_column: str, site_timezones: Mapping[str, str]
) -> pd.DataFrame:
    """Site wall-clock times → UTC. Ambiguous DST hours resolve to standard time (documented)."""
    out = {c: pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]") for c in columns}
    for site, tz in site_timezones.items():
        rows = df[site_column] == site
        if not rows.any():
            continue
        for c in columns:
            local = df.loc[rows, c]
            if isinstance(local.dtype, pd.DatetimeTZDtype):
                out[c].loc[rows] = local.dt.tz_convert("UTC")
                continue
            out[c].loc[rows] = local.dt.tz_localize(
                tz, ambiguous=np.zeros(int(rows.sum()), dtype=bool), nonexistent="shift_forward"
            ).dt.tz_convert("UTC")
    return df.assign(**out)


def utc_times(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    fixed = {}
    for c in columns:
        s = df[c]
        fixed[c] = (
            s.dt.tz_convert("UTC")
            if isinstance(s.dtype, pd.DatetimeTZDtype)
            else (s.dt.tz_localize("UTC"))
        )
    return df.assign(**fixed)


# --- the layer ---------------------------------------------------------------------------------


def _timestamp_columns(table: TableSpec) -> list[str]:
    return [c for c, s in table.columns.items() if s.type == "timestamp"]


def _encounter_id_column(table: TableSpec) -> str | None:
    for col, cspec in table.columns.items():
        if cspec.token == "encounter_token":
            return col
    return None


def _utc_ns(series: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) as int64; NaT compares false against everything."""
    values = series.to_numpy(dtype="datetime64[ns]").astype("int64")
    return np.where(series.isna().to_numpy(), np.iinfo("int64").max, values)


def _add_observation_checks(
    tables: dict[str, pd.DataFrame], spec: SourceSpec
) -> dict[str, pd.DataFrame]:
    """Derived columns the validate layer checks: recording delay and the encounter window."""
    ts = spec.timestamps
    if not (ts.event_time and ts.recorded_time and "encounters" in tables):
        return tables
    enc = tables["encounters"]
    enc_id = _encounter_id_column(spec.tables["encounters"])
    assert enc_id is not None
    windows = enc.set_index(enc_id)[["admit_time", "discharge_time"]]
    windows = windows[~windows.index.duplicated(keep="first")]
    slack = pd.Timedelta(hours=ts.observation_window_slack_hours)
    out = dict(tables)
    for tname, df in tables.items():
        table = spec.tables[tname]
        if ts.event_time not in table.columns or ts.recorded_time not in table.columns:
            continue
        delay = (df[ts.recorded_time] - df[ts.event_time]).dt.total_seconds() / 3600.0
        own_id = _encounter_id_column(table)
        within = np.zeros(len(df), dtype=bool)
        if own_id is not None:
            at = windows.index.get_indexer(df[own_id])
            found = at >= 0
            safe = np.where(found, at, 0)
            admit = _utc_ns(windows["admit_time"])[safe]
            discharge = _utc_ns(windows["discharge_time"])[safe]
            event = _utc_ns(df[ts.event_time])
            within = found & (event >= admit - slack.value) & (event <= discharge + slack.value)
        out[tname] = df.assign(**{RECORDING_DELAY: delay, WITHIN_WINDOW: within.astype(bool)})
    return out


def _generalize(tables: dict[str, pd.DataFrame], spec: SourceSpec) -> dict[str, pd.DataFrame]:
    out = dict(tables)
    for tname, df in tables.items():
        for col, cspec in spec.tables[tname].columns.items():
            if cspec.generalize == "zip3":
                out[tname] = out[tname].assign(zip3=df[col].astype("string").str[:3].astype(object))
            elif cspec.generalize == "age_at_admission":
                out = _age_at_admission(out, spec, tname, col)
    return out


def _age_at_admission(
    tables: dict[str, pd.DataFrame], spec: SourceSpec, patients_table: str, birth_col: str
) -> dict[str, pd.DataFrame]:
    patients = tables[patients_table]
    key = next(c for c, s in spec.tables[patients_table].columns.items() if s.token)
    births = patients.drop_duplicates(subset=[key]).set_index(key)[birth_col]
    enc = tables["encounters"]
    admit_local = enc["admit_time"].dt.tz_convert(None)
    birth = enc[key].map(births)
    years = (admit_local - birth).dt.days / 365.2425
    age = np.floor(years).clip(upper=AGE_CAP_YEARS)
    return {**tables, "encounters": enc.assign(age_years=age.astype("Int64"))}


def _fingerprint_text(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Normalized (trimmed, lower-case) values of the identifying columns, joined: what the
    person fingerprint hashes."""
    texts = [df[c].astype("string[pyarrow]").fillna("").str.strip().str.lower() for c in columns]
    joined = texts[0].str.cat(texts[1:], sep="\x1f") if len(texts) > 1 else texts[0]
    return joined.astype(object)


def _token_places(
    tables: Mapping[str, pd.DataFrame], spec: SourceSpec
) -> dict[str, list[tuple[str, str]]]:
    """Token namespace → the (table, column) places whose values it tokenizes."""
    namespaces: dict[str, list[tuple[str, str]]] = {}
    for tname, table in spec.tables.items():
        if tname in tables:
            for col, cspec in table.columns.items():
                if cspec.token is not None:
                    namespaces.setdefault(cspec.token, []).append((tname, col))
    return namespaces


def token_inputs(tables: Mapping[str, pd.DataFrame], spec: SourceSpec) -> dict[str, np.ndarray]:
    """Token namespace → the distinct values normalize tokenizes in it (the person fingerprint
    included). Raw identifiers: for the ingest layer's key rotation only."""
    out: dict[str, list[pd.Series]] = {}
    for tname, table in spec.tables.items():
        if table.person_fingerprint and tname in tables:
            text = _fingerprint_text(tables[tname], table.person_fingerprint)
            out.setdefault(FINGERPRINT, []).append(text)
    for namespace, places in _token_places(tables, spec).items():
        out.setdefault(namespace, []).extend(tables[t][c] for t, c in places)
    return {
        namespace: pd.unique(pd.concat([c.astype(object) for c in columns]).dropna().to_numpy())
        for namespace, columns in out.items()
    }


def _tokenize_and_drop(
    tables: dict[str, pd.DataFrame], spec: SourceSpec, key: HmacKey, report: NormalizeReport
) -> dict[str, pd.DataFrame]:
    out = dict(tables)
    for tname, table in spec.tables.items():
        if table.person_fingerprint and tname in out:
            text = _fingerprint_text(out[tname], table.person_fingerprint)
            out[tname] = out[tname].assign(**{FINGERPRINT: tokenize(text, key, FINGERPRINT)})
    namespaces = _token_places(out, spec)
    for tname, table in spec.tables.items():
        if tname not in out:
            continue
        for col, cspec in table.columns.items():
            if cspec.token is not None:
                report.tokenized_columns.append(f"{tname}.{col}->{cspec.token}")
            elif cspec.identifier is not None:
                report.dropped_identifiers.append(f"{tname}.{col}")
    for namespace, places in namespaces.items():
        originals = [out[t][c] for t, c in places]
        tokens = map_jointly(originals, token_function(key, namespace))
        for (tname, _), token in zip(places, tokens, strict=True):
            out[tname] = out[tname].assign(**{namespace: token.to_numpy()})
    for tname, table in spec.tables.items():
        if tname in out:
            identifiers = [c for c, cs in table.columns.items() if cs.identifier is not None]
            out[tname] = out[tname].drop(columns=identifiers)
    return out


def _order_proxy(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Keep the documented time proxy as a rank: the identifier itself must go."""
    order = df[column].rank(method="dense").astype("Int64") - 1
    return df.assign(**{ENCOUNTER_ORDER: order})


def _describe_codes(df: pd.DataFrame, table: TableSpec, spec: SourceSpec) -> pd.DataFrame:
    added = {}
    for col, cspec in table.columns.items():
        if cspec.code_table:
            names = spec.code_tables[cspec.code_table]
            added[re.sub(r"_id$", "", col) + "_desc"] = (
                df[col].astype("string").map(names).astype(object)
            )
    return df.assign(**added) if added else df


def normalize_extract(
    raw: Mapping[str, pd.DataFrame], spec: SourceSpec, key: HmacKey
) -> tuple[dict[str, pd.DataFrame], NormalizeReport]:
    report = NormalizeReport()
    tables = prepare_extract(raw, spec, report)
    return _tokenize_and_drop(tables, spec, key, report), report


def prepare_extract(
    raw: Mapping[str, pd.DataFrame], spec: SourceSpec, report: NormalizeReport
) -> dict[str, pd.DataFrame]:
    """Everything normalize does before tokenizing: types, canonical IDs and units, merges,
    times, generalization. The output still holds raw identifiers."""
    tables = {tname: cast_types(raw[tname], table) for tname, table in spec.tables.items()}
    tables = standardize_ids(tables, spec, report)
    for tname, table in spec.tables.items():
        df = tables[tname]
        if table.measurements is not None:
            df = convert_units(df, table.measurements, report)
        df = _describe_codes(df, table, spec)
        tables[tname] = df
    tables = apply_patient_merges(tables, spec, report)

    ts = spec.timestamps
    for tname, table in spec.tables.items():
        cols = _timestamp_columns(table)
        if not cols:
            continue
        df = tables[tname]
        if ts.site_column and ts.site_column in table.columns:
            tables[tname] = localize_site_times(df, cols, ts.site_column, ts.site_timezones)
        else:
            tables[tname] = utc_times(df, cols)
    tables = _add_observation_checks(tables, spec)
    tables = _generalize(tables, spec)
    if ts.order_proxy:
        for tname, table in spec.tables.items():
            if ts.order_proxy in table.columns:
                tables[tname] = _order_proxy(tables[tname], ts.order_proxy)

    # The merge list is consumed (applied above, counted in the report), not passed on.
    tables.pop("patient_merges", None)
    return tables


def normalized_name(column: str, spec: ColumnSpec) -> str | None:
    """What a catalog column is called after normalize (None when it is dropped)."""
    if spec.identifier == "direct":
        return spec.token
    if spec.generalize == "zip3":
        return "zip3"
    if spec.generalize == "age_at_admission":
        return None
    return column
