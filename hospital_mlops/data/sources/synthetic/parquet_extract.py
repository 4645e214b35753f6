"""The synthetic extract as files: ``write_tables`` writes any dict of tables as deterministic
parquet plus ``extract.json``; ``generate_extract`` generates the five tables and writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hospital_mlops.data.sources.synthetic.tables import generate_tables

# the package's name: what extract.json has always recorded as the generator
GENERATOR = "hospital_mlops.data.sources.synthetic"
TABLES = ("patients", "encounters", "vitals", "labs", "patient_merges")


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path, params: dict[str, Any]) -> Path:
    """Write each table as ``out_dir/<name>.parquet`` and ``extract.json``; return ``out_dir``.

    Bytes are deterministic for identical frames: no pandas index is written, rows keep their
    order, and the codec is zstd. Any dict of frames is accepted (fault scenarios use this too).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, out_dir / f"{name}.parquet", compression="zstd")
    meta = {"source": "synthetic", "generator": GENERATOR, **params}
    (out_dir / "extract.json").write_text(
        json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
    )
    return out_dir


def generate_extract(
    out_dir: Path, n_encounters: int, seed: int = 7, start: str = "2024-01-01", days: int = 365
) -> Path:
    """Write the five tables as parquet plus ``extract.json`` into ``out_dir``; return it."""
    tables = generate_tables(n_encounters, seed=seed, start=start, days=days)
    params = {"n_encounters": int(n_encounters), "seed": int(seed), "start": start, "days": days}
    return write_tables(tables, Path(out_dir), params)
