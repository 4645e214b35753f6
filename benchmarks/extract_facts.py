"""The bundled diabetes130 extract's size and label, counted from the file itself.

docs/data-catalog.md describes the extract: encounters, columns, patients, the encounters that
end in death or hospice (outside the intended use: they cannot be readmitted, and the features
layer leaves them out with the library's own rule, ``features.diabetes130_out_of_cohort``), and
the share readmitted within 30 days (``readmitted == "<30"``) of all encounters and of the
cohort. Counts only: no identifier of the extract is saved (the PHI rule).

Prints and saves benchmarks/results/extract_facts.json.

Usage: python benchmarks/extract_facts.py
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
from bench_common import command_line, save_and_print

ROOT = Path(__file__).resolve().parents[1]
EXTRACT = ROOT / "data" / "diabetes130" / "dataset_diabetes.zip"
OUT = ROOT / "benchmarks" / "results" / "extract_facts.json"


def read_extract() -> pd.DataFrame:
    with zipfile.ZipFile(EXTRACT) as archive:
        name = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        with archive.open(name) as handle:
            return pd.read_csv(handle, low_memory=False)


def facts(frame: pd.DataFrame) -> dict[str, Any]:
    from hospital_mlops.features import diabetes130_out_of_cohort

    outside = diabetes130_out_of_cohort(frame)
    readmitted = frame["readmitted"] == "<30"
    return {
        "encounters": len(frame),
        "columns": frame.shape[1],
        "patients": int(frame["patient_nbr"].nunique()),
        "readmitted_30d_share": round(float(readmitted.mean()), 4),
        "outside_intended_use": int(outside.sum()),
        "cohort_encounters": int((~outside).sum()),
        "cohort_readmitted_30d_share": round(float(readmitted[~outside].mean()), 4),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help
    save_and_print(
        {
            "extract": "diabetes130 (UCI), data/diabetes130/dataset_diabetes.zip",
            "diabetes130": facts(read_extract()),
            "command": command_line(),
        },
        OUT,
    )


if __name__ == "__main__":
    main()
