"""The daily worklist: a day's census scored, the highest risks first, as many as the team that
works the list can take (the use case's capacity), each with its reasons in clinical wording.

Written as CSV for the case-management system and as one self-contained HTML page (no script,
no external asset). Rows are encounter tokens, never raw identifiers: the EHR maps a token back
inside its own walls. The page's summary counts follow the small-cell rule. Pure: the batch
pipeline that reads the published snapshot and writes these files is a door over it (issue 22;
not wired in yet).
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

import pandas as pd

from hospital_mlops.features.base import FeatureSet
from hospital_mlops.model.reasons import attribute, reason_codes
from hospital_mlops.model.train import RiskModel
from hospital_mlops.render.page import page
from hospital_mlops.render.small_cells import RULE, count_html
from hospital_mlops.render.tables import table

TOKEN = "encounter_token"
TOP_REASONS = 3


class WorklistError(ValueError):
    """The census cannot be scored as given (a missing column, a capacity below one)."""


@dataclass(frozen=True)
class Worklist:
    day: str
    model: str  # name and version, as the registry knows it
    feature_set_version: str
    census: int  # encounters scored
    capacity: int  # the most the list may hold
    entries: pd.DataFrame  # rank, encounter_token, risk, reasons (list of str)


def build_worklist(
    census: pd.DataFrame,
    model: RiskModel,
    fs: FeatureSet,
    capacity: int,
    *,
    day: str,
    model_name: str,
    top_reasons: int = TOP_REASONS,
) -> Worklist:
    """The top ``capacity`` of ``census`` by calibrated risk, ties broken by token so the same
    census always gives the same list."""
    if capacity < 1:
        raise WorklistError(f"the worklist's capacity must be at least 1, not {capacity}")
    if model.feature_set_version != fs.version:
        raise WorklistError(
            f"the model was trained on {model.feature_set_version}; the census has {fs.version}"
        )
    needed = [TOKEN, *(f.name for f in fs.features)]
    missing = [c for c in needed if c not in census.columns]
    if missing:
        raise WorklistError(f"the census lacks the columns {missing}")
    scored = census[needed].reset_index(drop=True)
    scored["risk"] = model.predict_risk(scored, fs) if len(scored) else []
    top = scored.sort_values(["risk", TOKEN], ascending=[False, True], kind="stable")
    top = top.head(capacity).reset_index(drop=True)
    reasons = reason_codes(attribute(model, top, fs), top, fs, top_reasons) if len(top) else []
    entries = pd.DataFrame(
        {
            "rank": range(1, len(top) + 1),
            TOKEN: top[TOKEN].astype(str),
            "risk": top["risk"].astype("float64"),
            "reasons": [[r.text for r in row] for row in reasons],
        }
    )
    return Worklist(day, model_name, fs.version, len(scored), capacity, entries)


def worklist_csv(worklist: Worklist) -> str:
    """One line per entry: rank, token, risk (4 decimals) and up to three reasons."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", TOKEN, "risk", *(f"reason_{n}" for n in range(1, TOP_REASONS + 1))])
    for entry in worklist.entries.itertuples(index=False):
        reasons = list(entry.reasons)[:TOP_REASONS]
        padded = reasons + [""] * (TOP_REASONS - len(reasons))
        writer.writerow([entry.rank, getattr(entry, TOKEN), f"{entry.risk:.4f}", *padded])
    return out.getvalue()


def worklist_html(worklist: Worklist, title: str) -> str:
    """The list as one self-contained page, with what it was made from."""
    esc = html.escape
    rows = [
        [
            str(entry.rank),
            f"<code>{esc(getattr(entry, TOKEN))}</code>",
            f"{entry.risk:.1%}",
            "<br>".join(esc(r) for r in entry.reasons) or "—",
        ]
        for entry in worklist.entries.itertuples(index=False)
    ]
    body = (
        f"<h1>{esc(title)}</h1>"
        f"<p>{esc(worklist.day)}: the {count_html(len(worklist.entries))} highest risks of "
        f"{count_html(worklist.census)} admissions scored (capacity {worklist.capacity}), by "
        f"<code>{esc(worklist.model)}</code> on feature set "
        f"<code>{esc(worklist.feature_set_version)}</code>.</p>"
        + table(["rank", "encounter", "risk", "why"], rows)
        + f'<p class="note">{RULE} Encounters are shown by token; the EHR resolves them. '
        "Decision support for planning only: the list never decides a disposition.</p>"
    )
    return page(title, body)
