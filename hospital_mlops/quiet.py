"""Nothing phones home: the switches that keep MLflow, Great Expectations and any library that
honours ``DO_NOT_TRACK`` from sending telemetry.

Importing the package changes no environment variable. The switches are set by whoever starts a
process (the Makefile, the images' ``ENV``, the CLI's ``main`` first thing) and by the library
itself just before it first opens MLflow (``registry.client``) or Great Expectations
(``gx_runner``), whichever comes first. An operator's own value wins (``setdefault``).
"""

from __future__ import annotations

import os

SWITCHES = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


# A model load downloads ~120 files; a progress bar per download buried the one line a command
# prints (and the predictor's log) under kilobytes of bars.
MLFLOW_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def telemetry_off() -> None:
    for name, value in SWITCHES.items():
        os.environ.setdefault(name, value)


def before_mlflow() -> None:
    """What MLflow reads when it is imported (telemetry) and while it works (progress bars):
    called by every library path before its first ``import mlflow``."""
    telemetry_off()
    for name, value in MLFLOW_QUIET.items():
        os.environ.setdefault(name, value)
