"""Where drift data lives: the reference (a registered version's evidence, or a local file) and
the results of every tested window (SQLAlchemy: SQLite in the state directory by default,
PostgreSQL on a cluster through ``drift.store_url`` / ``HMLOPS_DRIFT_DB_URL``)."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from hospital_mlops import artifacts
from hospital_mlops.drift.alerts import DriftBaseline
from hospital_mlops.drift.reference import (
    BASELINE_FILE,
    REFERENCE_FILE,
    DriftReference,
    read_baseline,
    read_reference,
)
from hospital_mlops.drift.tester import DriftResult
from hospital_mlops.paths import writable_state_dir
from hospital_mlops.store_schema import create_tables

DB_FILE = "drift.db"

_metadata = sa.MetaData()
results_table = sa.Table(
    "drift_results",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("window_id", sa.String(64), nullable=False, unique=True),
    sa.Column("model_version", sa.String(200), nullable=False, index=True),
    sa.Column("tested_at", sa.String(40), nullable=False),
    sa.Column("window_size", sa.Integer, nullable=False),
    sa.Column("is_drift", sa.Boolean, nullable=False),
    sa.Column("backend", sa.String(20), nullable=False),
    sa.Column("result", sa.Text, nullable=False),  # the whole DriftResult as JSON
)


def default_store_url() -> str:
    directory = writable_state_dir()
    return f"sqlite:///{directory / DB_FILE}"


def redact_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class DriftStore:
    """Append-only results; the newest one per model version is what ``/drift/latest`` shows,
    also after a restart."""

    def __init__(self, url: str = "") -> None:
        self.url = url or default_store_url()
        self.engine = sa.create_engine(
            self.url, future=True, pool_pre_ping=True, hide_parameters=True
        )
        create_tables(self.engine, _metadata)

    def save(self, result: DriftResult) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                results_table.insert().values(
                    window_id=result.window_id,
                    model_version=result.model_version,
                    tested_at=result.tested_at,
                    window_size=result.window_size,
                    is_drift=result.is_drift,
                    backend=result.backend,
                    result=json.dumps(result.as_dict(), sort_keys=True),
                )
            )

    def latest(self, model_version: str | None = None) -> DriftResult | None:
        query = sa.select(results_table.c.result).order_by(results_table.c.id.desc()).limit(1)
        if model_version is not None:
            query = query.where(results_table.c.model_version == model_version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return DriftResult.from_dict(json.loads(row[0])) if row else None

    def count(self, model_version: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(results_table)
        if model_version is not None:
            query = query.where(results_table.c.model_version == model_version)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def reference_from_registry(
    model: str, ref: str
) -> tuple[DriftReference, str, DriftBaseline | None]:
    """The registered version's ``evidence/drift_reference.parquet``, its drift baseline (None
    for a version registered before baselines existed) and the version label the predictor puts
    in its answers (``name/3``)."""
    from hospital_mlops.drift.reference import DriftReferenceError
    from hospital_mlops.governance import registry

    version = registry.resolve(registry.client(), model, ref)
    local = registry.evidence_file(version.run_id, artifacts.evidence(REFERENCE_FILE))
    if local is None:
        raise DriftReferenceError(
            f"{model} version {version.version} has no evidence/{REFERENCE_FILE}; it was "
            "registered before drift references were recorded: retrain, or start the detector "
            "with a local reference"
        )
    found = registry.evidence_file(version.run_id, artifacts.evidence(BASELINE_FILE))
    baseline = read_baseline(Path(found)) if found is not None else None
    return read_reference(Path(local)), f"{model}/{version.version}", baseline


def baseline_beside(reference_path: Path) -> DriftBaseline | None:
    """The ``drift_baseline.json`` next to a local reference, if there is one."""
    path = reference_path.with_name(BASELINE_FILE)
    return read_baseline(path) if path.exists() else None
