"""The data catalog: what each source is, who owns it, what it may be used for, and its schema.

The catalog is the single place where a hospital describes its feeds. Every gate expectation is
generated from it (see ``validation.suites``), so a schema change is a catalog change under review,
never an edit to a test run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import config_path

ColumnType = Literal["string", "integer", "float", "timestamp", "date", "boolean"]
Provenance = Literal["clinical_truth", "administrative"]
IdentifierKind = Literal["direct", "quasi"]
ExtractFormat = Literal["csv", "parquet"]


class CatalogError(ValueError):
    """The catalog file is missing, malformed or inconsistent; the message carries the YAML path."""


class UseNotPermitted(PermissionError):
    """The catalog does not allow this source to be used for the requested purpose."""


class UnknownSource(KeyError):
    """The requested source is not in the catalog."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence.
        return str(self.args[0])


_Strict = StrictModel


class Range(_Strict):
    min: float | None = None
    max: float | None = None
    mostly: Annotated[float, Field(gt=0, le=1)] = 0.999

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ColumnSpec(_Strict):
    type: ColumnType
    description: str
    provenance: Provenance
    identifier: IdentifierKind | None = None
    # A direct identifier is replaced at normalize by this HMAC token column (same name = same
    # namespace, so one MRN gets one token in every table); without one it is dropped.
    token: str | None = None
    # A quasi-identifier is generalized at normalize and the original dropped.
    generalize: Literal["age_at_admission", "zip3"] | None = None
    unit: str | None = None
    allowed: list[str] | None = None
    code_table: str | None = None
    range: Range | None = None
    # The median a column must have in its declared unit: an undeclared unit change moves it.
    plausible_median: tuple[float, float] | None = None
    max_missing: Annotated[float, Field(ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _identifier_handling(self) -> ColumnSpec:
        if self.token is not None and self.identifier != "direct":
            raise ValueError("token is only for direct identifiers")
        if self.generalize is not None and self.identifier != "quasi":
            raise ValueError("generalize is only for quasi-identifiers")
        return self


class UnitConversion(_Strict):
    factor: float
    offset: float = 0.0


class MeasurementSpec(_Strict):
    """One coded measurement (a lab) in a long-format table."""

    name: str
    loinc: str
    canonical_unit: str
    accepted_units: dict[str, UnitConversion] = Field(default_factory=dict)
    range: Range
    plausible_median: tuple[float, float]


class MeasurementTable(_Strict):
    code_column: str
    value_column: str
    unit_column: str
    codes: dict[str, MeasurementSpec]


class IdStandardization(_Strict):
    """Encounter IDs arrive in site-specific spellings; this makes them one canonical form."""

    digits_pattern: str = r"(\d+)"
    canonical_format: str = "{:d}"


class TableSpec(_Strict):
    file: str
    primary_key: list[str]
    description: str = ""
    na_values: list[str] = Field(default_factory=list)
    # A table that may legitimately be empty in a delivery (e.g. no merges that day) sets 0.
    min_rows: Annotated[int, Field(ge=0)] = 1
    columns: dict[str, ColumnSpec]
    measurements: MeasurementTable | None = None
    id_standardization: dict[str, IdStandardization] = Field(default_factory=dict)
    # Columns whose keyed hash identifies a person (EMPI duplicate detection); built at normalize
    # as ``person_fingerprint``, which must be unique. The columns themselves may be dropped.
    person_fingerprint: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_are_columns(self) -> TableSpec:
        missing = [
            k for k in [*self.primary_key, *self.person_fingerprint] if k not in self.columns
        ]
        if missing:
            raise ValueError(f"primary_key names unknown columns {missing}")
        if self.measurements is not None:
            for col in (
                self.measurements.code_column,
                self.measurements.value_column,
                self.measurements.unit_column,
            ):
                if col not in self.columns:
                    raise ValueError(f"measurements names unknown column {col!r}")
        return self


class TimestampSemantics(_Strict):
    """How a source expresses time. ``order_proxy`` is for sources without dates."""

    description: str
    order_proxy: str | None = None
    timezone: str | None = None
    site_column: str | None = None
    site_timezones: dict[str, str] = Field(default_factory=dict)
    event_time: str | None = None
    recorded_time: str | None = None
    max_recording_delay_hours: float | None = None
    observation_window_slack_hours: float = 24.0


class SourceSpec(_Strict):
    system: str
    description: str
    owner: str
    steward: str
    refresh: Literal["static", "daily", "weekly", "monthly", "quarterly"]
    retention_days: Annotated[int, Field(gt=0)]
    permissible_uses: list[str]
    format: ExtractFormat
    default_extract: str | None = None
    # a generated source: "module:function(out_dir, n_encounters, seed=...)" writes an extract
    # when a run is given none (the synthetic source); None: the source is delivered
    generator: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    licence: str | None = None
    attribution: str | None = None
    timestamps: TimestampSemantics
    label: str
    # what every model trained on this source must say about its data (the validation report
    # and the model card list them with the use case's own)
    limitations: list[str] = Field(default_factory=list)
    code_tables: dict[str, dict[str, str]] = Field(default_factory=dict)
    tables: dict[str, TableSpec]

    @model_validator(mode="after")
    def _code_tables_exist(self) -> SourceSpec:
        for tname, table in self.tables.items():
            for cname, col in table.columns.items():
                if col.code_table is not None and col.code_table not in self.code_tables:
                    raise ValueError(
                        f"tables.{tname}.columns.{cname}.code_table names unknown "
                        f"code table {col.code_table!r}"
                    )
        return self

    def identifier_columns(self, table: str) -> list[str]:
        return [c for c, s in self.tables[table].columns.items() if s.identifier is not None]


class Catalog(_Strict):
    version: str
    uses: dict[str, str]
    sources: dict[str, SourceSpec]

    @model_validator(mode="after")
    def _uses_declared(self) -> Catalog:
        for sname, src in self.sources.items():
            unknown = [u for u in src.permissible_uses if u not in self.uses]
            if unknown:
                raise ValueError(
                    f"sources.{sname}.permissible_uses names undeclared uses {unknown}"
                )
        return self

    def source(self, name: str) -> SourceSpec:
        if name not in self.sources:
            raise UnknownSource(
                f"source {name!r} is not in the data catalog (catalogued: "
                f"{', '.join(sorted(self.sources))}); add it to config/catalog.yaml under review "
                "before it can be ingested"
            )
        return self.sources[name]

    def require_use(self, source: str, use: str) -> SourceSpec:
        spec = self.source(source)
        if use not in spec.permissible_uses:
            raise UseNotPermitted(
                f"source {source!r} may not be used for {use!r}; the catalog permits "
                f"{spec.permissible_uses} (owner: {spec.owner})"
            )
        return spec


def load_catalog(path: Path | str | None = None) -> Catalog:
    return load_yaml_model(
        Path(path) if path else config_path("catalog.yaml"), Catalog, CatalogError, "catalog"
    )


def catalog_version(catalog: Catalog) -> str:
    """A content hash of the validated catalog, recorded in every manifest."""
    canonical = json.dumps(catalog.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]
