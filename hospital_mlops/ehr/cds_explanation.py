"""The card's "full explanation" page: one logged prediction, as a self-contained HTML page a
clinician opens from the card (no script, no external asset: it opens on an air-gapped network).

It shows the answer as it was given (risk, band, the top reasons, limitations, model version and
time), the inputs the model read, and, when the same model version still serves, every input's
exact TreeSHAP contribution from re-scoring those inputs. Pure: the caller supplies the logged
record and the re-scored answer.
"""

from __future__ import annotations

from html import escape
from typing import Any

from hospital_mlops.model.scoring import ENCOUNTER_TOKEN, OBSERVATION_TIMES
from hospital_mlops.render.page import page

STYLE = """
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#a33}.down{color:#262}.note{color:#555;font-size:.9rem}
"""


def _row(*cells: str, numeric: tuple[int, ...] = ()) -> str:
    tds = "".join(
        f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells)
    )
    return f"<tr>{tds}</tr>"


def explanation_page(
    record: dict[str, Any], rescored: dict[str, Any] | None, risk_label: str = "Risk"
) -> str:
    """``record`` is the prediction log's row (``inputs``, ``answer``); ``rescored`` the same
    inputs scored again with every contribution, or None when that is not possible (the
    service is down, or another version serves now); ``risk_label`` the use case's name for
    its risk, as its card says it."""
    answer = record["answer"]
    risk = float(answer["risk"])
    parts = [
        f"<h1>{escape(risk_label)}: {risk * 100:.0f}% ({escape(str(answer['band']))})</h1>",
        f'<p class="note">Model {escape(str(answer.get("model_version", "")))}; scored '
        f"{escape(str(answer.get('scored_at', '')))}; prediction "
        f"{escape(str(answer['prediction_id']))}.</p>",
        "<h2>Main reasons, as shown on the card</h2><ol>",
        *(f"<li>{escape(r['text'])}</li>" for r in answer.get("reasons", [])),
        "</ol>",
    ]
    if answer.get("limitations"):
        parts.append("<h2>Limitations</h2><ul>")
        parts += [f"<li>{escape(str(x))}</li>" for x in answer["limitations"]]
        parts.append("</ul>")
    parts.append("<h2>Every input's contribution</h2>")
    if rescored is not None and rescored.get("contributions"):
        parts.append(
            '<p class="note">Exact TreeSHAP contributions of the model that gave this risk, '
            "largest first: positive values raise the risk, negative lower it. With the "
            f"baseline ({float(rescored['baseline']):+.4f}) they add up to the model's score.</p>"
        )
        parts.append("<table><tr><th>input</th><th>contribution</th></tr>")
        ranked = sorted(rescored["contributions"].items(), key=lambda kv: -abs(kv[1]))
        for name, value in ranked:
            css = "up" if value > 0 else "down" if value < 0 else ""
            parts.append(
                _row(escape(name), f'<span class="{css}">{value:+.4f}</span>', numeric=(1,))
            )
        parts.append("</table>")
    else:
        parts.append(
            '<p class="note">Not available now: the model version that gave this risk is not '
            "the one serving, or the model service did not answer. The reasons above are the "
            "ones given at the time.</p>"
        )
    parts.append("<h2>What the model read</h2><table><tr><th>input</th><th>value</th></tr>")
    inputs = record["inputs"]
    for name in sorted(inputs):
        if name in (ENCOUNTER_TOKEN, OBSERVATION_TIMES):
            continue
        parts.append(_row(escape(name), escape(str(inputs[name]))))
    parts.append("</table>")
    missing = answer.get("missing_inputs") or []
    if missing:
        parts.append(f"<p>Not recorded: {escape(', '.join(map(str, missing)))}.</p>")
    body = "\n".join(parts)
    return page(f"{risk_label}: explanation", body, STYLE)
