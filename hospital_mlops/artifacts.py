"""Every artifact's file name and every store path, in one place.

A training run writes its evidence under these names, the registry keeps them under
``evidence/``, and the packet, monitoring, serving and the CDS card read them back by the same
names. A rename here is a rename everywhere; a string literal elsewhere would silently miss it
(``test_architecture`` keeps them out of the other modules).

The store (``--store``, ``<out>/store`` locally) holds:

- ``published/features/<sha256>/``: validated feature snapshots, written atomically by publish;
- ``published/index.jsonl``: one line per published snapshot (``data.published_index``).
"""

from __future__ import annotations

from pathlib import Path

# a training run's evidence, registered with the version under EVIDENCE_DIR
EVIDENCE_DIR = "evidence"
TRAINING = "training.json"
TEST_PREDICTIONS = "test_predictions.parquet"
EVALUATION = "evaluation.json"
GATES = "gates.json"
VALIDATION_REPORT_HTML = "validation_report.html"
VALIDATION_REPORT_MD = "validation_report.md"
MODEL_CARD_HTML = "model_card.html"
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_XML = "model_card.xml"  # the CHAI Applied Model Card's own XML encoding
DRIFT_REFERENCE = "drift_reference.parquet"
DRIFT_BASELINE = "drift_baseline.json"
HTI1_ATTRIBUTES = "hti1_source_attributes.json"
# the feature rows and expected risks a loaded model must reproduce (registered under "golden")
GOLDEN_DIR = "golden"
GOLDEN = "golden.parquet"
# a monitoring run's page
MONITORING_REPORT = "monitoring_report.html"
# a batch-scoring run's worklist (inference.batch): CSV for the case-management system, the same
# list as a page, and what it was made from
WORKLIST_CSV = "worklist.csv"
WORKLIST_HTML = "worklist.html"
WORKLIST_SUMMARY = "worklist.json"


def evidence(name: str) -> str:
    """A registered version's artifact path for one piece of evidence."""
    return f"{EVIDENCE_DIR}/{name}"


def published_features(store: Path) -> Path:
    """Where validated feature snapshots are published, one directory per sha256."""
    return store / "published" / "features"


def publish_index(store: Path) -> Path:
    """The publish index: one JSON line per published feature snapshot."""
    return store / "published" / "index.jsonl"
