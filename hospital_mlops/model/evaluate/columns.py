"""The columns of a model's test predictions (``test_predictions.parquet``): the contract between
the evaluation that writes them and the readers that serve from them (the CDS service's
calibration table), which must not need the evaluation's dependencies (fairlearn is not in the
serving image)."""

SCORE = "score"
COMPARATOR_SCORE = "comparator_score"
LABEL = "label"
