"""A registry version exported as a self-verifying directory: serving from a storage path.

KServe's storage initializer copies a model from a ``storageUri`` (a PVC, S3, GCS) into
``/mnt/models``; a hospital cluster often cannot reach the MLflow server from the serving
namespace at all. ``export_bundle`` writes what the predictor needs to serve and verify a
version without the registry: the model files, the 200 golden rows, the training record, the
drift reference, and a manifest with the sha256 recorded at registration. ``load_bundle``
refuses a bundle whose files do not hash to that sha256 (and, when the deployment pins one, to
the expected sha256 too), or whose model does not reproduce its golden predictions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.data.lineage import utc_now
from hospital_mlops.governance.registry import store_errors
from hospital_mlops.inference.served_model import FeatureCodeMismatch, feature_set_of
from hospital_mlops.model.train import MODEL_FILES, RiskModel, model_hash

MANIFEST = "bundle.json"
MODEL_DIR = "risk_model"
GOLDEN = artifacts.GOLDEN
TRAINING = artifacts.TRAINING
DRIFT_REFERENCE = artifacts.DRIFT_REFERENCE
DRIFT_BASELINE = artifacts.DRIFT_BASELINE  # its alert thresholds (versions before them have none)
GOLDEN_TOLERANCE = 1e-9


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, altered, or does not reproduce its golden rows."""


@dataclass(frozen=True)
class Bundle:
    model: RiskModel
    version: int
    name: str
    training: dict[str, Any]
    sha256: str
    tags: dict[str, str]
    path: Path


def is_bundle(ref: str) -> bool:
    return (Path(ref) / MANIFEST).is_file()


@store_errors
def export_bundle(model: str, ref: str, out: Path) -> Path:
    """Write version ``ref`` of ``model`` to ``out`` (atomically: a half-written bundle never
    appears under its name)."""
    from hospital_mlops.governance import registry

    c = registry.client()
    version = registry.resolve(c, model, ref)
    uri = registry.model_uri(model, str(version.version))
    files = registry.model_files(version)
    recorded = version.tags.get("lineage.model_sha256", "")
    if model_hash(files) != recorded:
        raise BundleError(f"{uri}: the model files do not hash to the registered sha256")
    if out.exists():
        raise BundleError(f"{out} already exists; export to a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / MODEL_DIR).mkdir()
        for name in MODEL_FILES:
            shutil.copy2(files / name, staging / MODEL_DIR / name)
        run_id = version.run_id
        golden = registry.download_artifacts(run_id, "golden")
        shutil.copy2(Path(golden) / GOLDEN, staging / GOLDEN)
        for artifact, name in ((artifacts.evidence(artifacts.TRAINING), TRAINING),):
            shutil.copy2(
                registry.download_artifacts(run_id, artifact),
                staging / name,
            )
        # versions registered before drift references existed have none; a failing store is
        # not a missing reference (evidence_file tells the two apart)
        for name in (DRIFT_REFERENCE, DRIFT_BASELINE):
            found = registry.evidence_file(run_id, artifacts.evidence(name))
            if found is not None:
                shutil.copy2(found, staging / name)
        manifest = {
            "name": model,
            "version": int(version.version),
            "model_sha256": recorded,
            "feature_set_version": version.tags.get("feature_set_version", ""),
            "features_sha256": version.tags.get("lineage.features_sha256", ""),
            "source": version.tags.get("source", ""),
            "use_case": version.tags.get("use_case", ""),
            "registry_run_id": run_id,
            "exported_at": utc_now(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_bundle(path: Path, expected_sha256: str | None = None) -> Bundle:
    """Load and verify a bundle; every failure is a ``BundleError`` saying what differs."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    missing = [
        n
        for n in (*(f"{MODEL_DIR}/{m}" for m in MODEL_FILES), GOLDEN, TRAINING)
        if not (path / n).is_file()
    ]
    if missing:
        raise BundleError(f"{path} is incomplete: missing {', '.join(missing)}")
    actual = model_hash(path / MODEL_DIR)
    if actual != manifest["model_sha256"]:
        raise BundleError(
            f"{path}: the model files hash to {actual[:16]}…, the bundle recorded "
            f"{manifest['model_sha256'][:16]}…; the artifact was changed after export"
        )
    if expected_sha256 and actual != expected_sha256:
        raise BundleError(
            f"{path}: the model hashes to {actual[:16]}…, the deployment expects "
            f"{expected_sha256[:16]}…"
        )
    model = RiskModel.load(path / MODEL_DIR)
    try:
        found = feature_set_of(model)
    except FeatureCodeMismatch as exc:
        raise BundleError(f"{path}: {exc}") from None
    golden = pd.read_parquet(path / GOLDEN)
    expected = golden.pop("expected_risk").to_numpy()
    worst = float(np.max(np.abs(model.predict_risk(golden, found) - expected)))
    if worst > GOLDEN_TOLERANCE:
        raise BundleError(
            f"{path} does not reproduce its golden predictions: largest difference {worst:.3g}"
        )
    return Bundle(
        model=model,
        version=int(manifest["version"]),
        name=str(manifest["name"]),
        training=json.loads((path / TRAINING).read_text()),
        sha256=actual,
        tags={
            "lineage.features_sha256": manifest.get("features_sha256", ""),
            "use_case": manifest.get("use_case", ""),
        },
        path=path,
    )
