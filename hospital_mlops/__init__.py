"""hospital-mlops: hospital risk models from raw EHR extracts to trusted predictions.

The library is pure domain code (no kfp or kserve imports); ``components/`` and ``serving/`` are
thin adapters over it.
"""

import os

# Nothing phones home: set before any of the libraries that read these are imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

__version__ = "0.1.0"
