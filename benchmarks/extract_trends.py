"""How the inputs the drift alerts flag on the real extract move across its years.

docs/drift.md reads each real window's flags as a real change or noise. This gives that reading
its figures: the extract in encounter order (its only time order: encounter IDs rise with time)
cut into ten equal parts, with, per part, the recorded diagnoses (mean, share at the old cap of
9, share above 9), the share of encounters with a max glucose result sent, and the share of the
most common admission source.

Prints and saves benchmarks/results/extract_trends.json.

Usage: python benchmarks/extract_trends.py
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import save_and_print

ROOT = Path(__file__).resolve().parents[1]
EXTRACT = ROOT / "data" / "diabetes130" / "dataset_diabetes.zip"
OUT = ROOT / "benchmarks" / "results" / "extract_trends.json"
COLUMNS = ["encounter_id", "number_diagnoses", "max_glu_serum", "admission_source_id"]


def read_extract() -> pd.DataFrame:
    with zipfile.ZipFile(EXTRACT) as archive:
        name = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        with archive.open(name) as handle:
            frame = pd.read_csv(handle, usecols=COLUMNS)
    return frame.sort_values("encounter_id", kind="stable").reset_index(drop=True)


def trends(frame: pd.DataFrame, parts: int = 10) -> list[dict[str, Any]]:
    top_source = int(frame["admission_source_id"].mode()[0])
    glucose_sent = ~frame["max_glu_serum"].isna() & (frame["max_glu_serum"] != "None")
    out = []
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        part = frame.iloc[rows]
        dx = part["number_diagnoses"]
        out.append(
            {
                "part": i + 1,
                "encounters": len(part),
                # where the part starts in encounter order: a row position, never the raw
                # encounter_id (no identifier of the extract is saved: the PHI rule)
                "first_row": int(rows[0]),
                "diagnoses_mean": round(float(dx.mean()), 2),
                "diagnoses_share_at_9": round(float((dx == 9).mean()), 3),
                "diagnoses_share_above_9": round(float((dx > 9).mean()), 4),
                "max_glucose_sent_share": round(float(glucose_sent.iloc[rows].mean()), 3),
                f"admission_source_{top_source}_share": round(
                    float((part["admission_source_id"] == top_source).mean()), 3
                ),
            }
        )
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help
    frame = read_extract()
    save_and_print(
        {
            "extract": "diabetes130 (UCI), in encounter-ID order, ten equal parts",
            "parts": trends(frame),
            "command": "python benchmarks/extract_trends.py",
        },
        OUT,
    )


if __name__ == "__main__":
    main()
