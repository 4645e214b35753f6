"""The validation report: self-contained HTML (inline SVG plots, no external assets) and a
Markdown summary for the Kubeflow dashboard. Renders an evaluation; computes nothing new."""

from __future__ import annotations

import html
from typing import Any

from hospital_mlops.governance.evidence import limitations_of
from hospital_mlops.render.page import page
from hospital_mlops.render.plots import svg
from hospital_mlops.render.small_cells import RULE as SMALL_CELL_RULE
from hospital_mlops.render.small_cells import count_html, suppressed_rows
from hospital_mlops.render.tables import table

SUPPRESSED = "suppressed"


def _fmt(estimate: dict[str, Any], digits: int = 3) -> str:
    value, ci = estimate.get("value"), estimate.get("ci") or [None, None]
    if value is None:
        return "n/a"
    if ci[0] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def _plots(evaluation: dict[str, Any], outcome: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable, no font files
    out = {}
    rel = evaluation["calibration"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    xs = [r["mean_risk"] for r in rel]
    ys = [r["observed_rate"] for r in rel]
    lo = [r["observed_rate"] - r["observed_ci"][0] for r in rel]
    hi = [r["observed_ci"][1] - r["observed_rate"] for r in rel]
    top = max(max(xs), max(r["observed_ci"][1] for r in rel)) * 1.08
    ax.plot([0, top], [0, top], linestyle="--", color="#888", label="perfect calibration")
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", color="#1f5fa8", label="observed (95% CI)")
    ax.set_xlabel("predicted risk (bin mean)")
    ax.set_ylabel(f"observed rate of {outcome}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.legend(loc="upper left", fontsize=8)
    out["reliability"] = svg(
        fig,
        f"Reliability: the observed rate of {outcome} against the predicted risk, per risk bin, "
        "with 95% confidence intervals and the line of perfect calibration",
    )
    plt.close(fig)

    curve = evaluation["decision_curve"]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    t = [p["threshold"] for p in curve]
    ax.plot(t, [p["model"] for p in curve], color="#1f5fa8", label="model")
    ax.plot(t, [p["treat_all"] for p in curve], color="#b5651d", label="alert everyone")
    ax.plot(t, [0.0 for _ in curve], color="#555", label="alert no one")
    ax.set_ylim(min(-0.01, min(p["model"] for p in curve)), max(p["model"] for p in curve) * 1.3)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.legend(fontsize=8)
    out["decision_curve"] = svg(
        fig,
        "Decision curve: net benefit of alerting by the model, alerting everyone and alerting "
        "no one, across threshold probabilities",
    )
    plt.close(fig)
    return out


def _slices(evaluation: dict[str, Any]) -> str:
    slices = evaluation.get("slices")
    if not slices:
        return ""
    listed = [{"name": n, "kind": n.split("=")[0], **s} for n, s in slices.items()]
    hidden = suppressed_rows(listed, "kind", "rows", "events")
    rows = [
        [
            html.escape(s["name"]),
            count_html(s["rows"], bool(hide)),
            count_html(s["events"], bool(hide)),
            SUPPRESSED
            if hide == "small"
            else ("n/a" if s["auroc"] is None else f"{s['auroc']:.3f}"),
            SUPPRESSED if hide == "small" else f"{s['observed_to_expected']:.2f}",
        ]
        for s, hide in zip(listed, hidden, strict=True)
    ]
    return "<h2>Extra validation slices (test period)</h2>" + table(
        ["slice", "encounters", "events", "AUROC", "observed / expected"], rows
    )


def _written(record: dict[str, Any] | None) -> str:
    """Who wrote a justification and when, relative to an evaluation raising the flag."""
    if record is None:
        return ""
    if record["post_hoc"]:
        when = "after an evaluation had raised the flag; post hoc"
    else:
        when = f"before the evaluation of {record['evaluated_on']}"
    return f" (by {record['by']}, written on {record['written_on']}, {when})"


def validation_html(
    evaluation: dict[str, Any], gates: dict[str, Any], context: dict[str, Any]
) -> str:
    use_case = context["use_case"]
    training = context["training"]
    source = context["source"]
    esc = html.escape
    plots = _plots(evaluation, use_case.label.name)
    verdict = "PASSED" if gates["passed"] else "FAILED"
    gate_rows = [
        [
            esc(g["name"]),
            f'<span class="{"pass" if g["passed"] else "fail"}">'
            f"{'pass' if g['passed'] else 'FAIL'}</span>",
            esc(g["observed"]),
            esc(g["required"]),
        ]
        for g in gates["gates"]
    ]
    split_rows = [
        [
            esc(p["period"]),
            esc(f"{p['start']} … {p['end']}"),
            f"{p['rows']:,}",
            f"{p['patients']:,}",
            f"{p['events']:,}",
            f"{p['event_rate']:.3f}",
            f"{p.get('patients_also_in_train', '—')}",
        ]
        for p in training["split"]
    ]
    d, c = evaluation["discrimination"], evaluation["calibration"]
    comp = evaluation["comparator"]
    threshold_rows = [
        [
            esc(name),
            f"{t['threshold']:.3f}",
            f"{t['alerts_per_100_declared']:g}",
            _fmt(t["alerts_per_100"], 1),
            _fmt(t["sensitivity"]),
            _fmt(t["specificity"]),
            _fmt(t["ppv"]),
            _fmt(t["npv"]),
            _fmt(t["number_needed_to_evaluate"], 1),
        ]
        for name, t in evaluation["thresholds"].items()
    ]
    sub_rows, sub_class = [], []
    hidden = suppressed_rows(evaluation["subgroups"], "subgroup", "rows", "events")
    for s, hide in zip(evaluation["subgroups"], hidden, strict=True):
        m, r = s["metrics"], s["ratios"]
        rates = (
            [SUPPRESSED] * 5
            if hide == "small"
            else [
                _fmt(m["auroc"]),
                _fmt(m["sensitivity"]),
                _fmt(m["ppv"]),
                _fmt(m["observed_to_expected"], 2),
                "; ".join(f"{k} {_fmt(v, 2)}" for k, v in r.items()) or "—",
            ]
        )
        sub_rows.append(
            [
                esc(s["subgroup"]),
                esc(s["group"]) + (" (reference)" if s["group"] == s["reference"] else ""),
                count_html(s["rows"], bool(hide)),
                count_html(s["events"], bool(hide)),
                *rates,
                ("FLAG: " + ", ".join(s["flags"]))
                if s["flags"]
                else ("" if s["assessable"] else "too small to assess"),
            ]
        )
        sub_class.append("flag" if s["flags"] else "")
    justifications = use_case.subgroup_policy.justifications
    records = {r["flag"]: r for r in gates.get("justifications", [])}
    flags = evaluation["subgroup_flags"]
    flag_list = (
        "".join(
            f"<li><code>{esc(f)}</code>: "
            + (
                esc(justifications[f].text) + esc(_written(records.get(f)))
                if f in justifications
                else '<span class="fail">no written justification</span>'
            )
            + "</li>"
            for f in flags
        )
        or "<li>none</li>"
    )
    limitations = limitations_of(source, use_case)
    code = context["code_version"]
    body = f"""
<h1>Validation report: {esc(use_case.title)}</h1>
<p><b>Verdict: <span class="{"pass" if gates["passed"] else "fail"}">{verdict}</span></b>
(pre-declared gates in <code>config/use_case.yaml</code>, version {
        esc(use_case.content_version)
    }; declared: {esc(_declared(gates))})</p>
<table>
<tr><th>source</th><td>{esc(source)}</td></tr>
<tr><th>run</th><td>{esc(context["run_id"])}</td></tr>
<tr><th>feature snapshot (sha256)</th><td><code>{esc(training["features_sha256"])}</code></td></tr>
<tr><th>model (sha256)</th><td><code>{esc(training["model_sha256"])}</code></td></tr>
<tr><th>feature set</th><td>{esc(training["feature_set_version"])}</td></tr>
<tr><th>code</th><td>git {esc(str(code.get("git_sha")))}{
        " (dirty)" if code.get("dirty") else ""
    }</td></tr>
</table>
<h2>Intended use</h2><p>{esc(use_case.intended_use)}</p>
<p>Prediction time: {esc(use_case.prediction_time)}.</p>
<h2>Label, inclusion and exclusion</h2>
<p><b>Label:</b> {esc(use_case.label.definition)} (window {use_case.label.window_days} days).</p>
<ul>{"".join(f"<li>Excluded / out of scope: {esc(x)}</li>" for x in use_case.out_of_scope)}</ul>
<h2>Data and time-based split</h2>
<p>Time axis
<code>{esc(str(use_case.for_source(source).split.time_column))}</code>, with an embargo of
{use_case.for_source(source).split.embargo} {
        "days" if use_case.for_source(source).split.axis == "time" else "encounters"
    }
before each later period ({training["embargoed_rows"]:,} encounters left out), so no training label
can see into the validation or test period.</p>
{
        table(
            [
                "period",
                "range",
                "encounters",
                "patients",
                "events",
                "event rate",
                "patients also in train",
            ],
            split_rows,
        )
    }
<h2>Gates</h2>
{table(["gate", "result", "observed", "required"], gate_rows)}
<h2>Discrimination (test slice, 95% CI, patient-cluster bootstrap, {
        evaluation["bootstrap"]["replicates"]
    } replicates)</h2>
{
        table(
            ["metric", "model", "comparator"],
            [
                ["AUROC", _fmt(d["auroc"]), _fmt(comp["auroc"])],
                ["AUPRC", _fmt(d["auprc"]), "—"],
                ["AUROC margin over comparator", _fmt(comp["auroc_margin"]), "—"],
            ],
        )
    }
<p class="note">Comparator: logistic regression on log(1 + {esc(", ".join(comp["columns"]))}).</p>
<h2>Calibration</h2>
{
        table(
            ["metric", "value (95% CI)"],
            [
                ["ECE (equal-mass bins)", _fmt(c["ece"], 4)],
                ["calibration slope", _fmt(c["slope"])],
                ["calibration intercept (in the large)", _fmt(c["intercept"])],
                ["Brier score", _fmt(c["brier"], 4)],
                ["observed / expected", _fmt(c["observed_to_expected"])],
            ],
        )
    }
{plots["reliability"]}
<h2>Thresholds per use</h2>
<p>Each threshold is fixed on the validation slice at the declared alert rate, then reported here
on the test slice.</p>
{
        table(
            [
                "use",
                "risk ≥",
                "alerts/100 declared",
                "alerts/100 observed",
                "sensitivity",
                "specificity",
                "PPV",
                "NPV",
                "number needed to evaluate",
            ],
            threshold_rows,
        )
    }
<h2>Subgroups (at the {esc(evaluation["primary_threshold"])} threshold)</h2>
<p>Ratios are to the largest group; flagged outside {use_case.subgroup_policy.ratio_bounds[0]}–{
        use_case.subgroup_policy.ratio_bounds[1]
    }
for {esc(", ".join(use_case.subgroup_policy.metrics))}, when a group has at least
{use_case.subgroup_policy.min_group_rows} encounters and {
        use_case.subgroup_policy.min_group_events
    } events. {SMALL_CELL_RULE}</p>
{
        table(
            [
                "subgroup",
                "group",
                "encounters",
                "events",
                "AUROC",
                "sensitivity",
                "PPV",
                "O/E",
                "ratio to reference",
                "",
            ],
            sub_rows,
            sub_class,
        )
    }
<h3>Flags and their justifications</h3><ul>{flag_list}</ul>
{_slices(evaluation)}
<h2>Decision curve</h2>
{plots["decision_curve"]}
<h2>Known limitations</h2><ul>{"".join(f"<li>{esc(x)}</li>" for x in limitations)}</ul>
<h2>Reproducing these numbers</h2>
<p>Every number above is recomputable from <code>test_predictions.parquet</code> (label, score,
comparator score, patient token and subgroup columns) with
<code>hospital_mlops.model.evaluate.evaluation.evaluate_predictions</code> and the thresholds in
<code>training.json</code>.</p>
"""
    return page(f"Validation report — {use_case.title}", body)


def _declared(gates: dict[str, Any]) -> str:
    on = gates.get("gates_declared_on")
    order = gates.get("gates_declared", "not recorded")
    return f"{on}, {order}" if on else str(order)


def validation_markdown(
    evaluation: dict[str, Any], gates: dict[str, Any], context: dict[str, Any]
) -> str:
    d, c, comp = evaluation["discrimination"], evaluation["calibration"], evaluation["comparator"]
    primary = evaluation["thresholds"][evaluation["primary_threshold"]]
    lines = [
        f"# Model validation: {'PASSED' if gates['passed'] else 'FAILED'}",
        "",
        f"Source `{context['source']}`, run `{context['run_id']}`, model "
        f"`{context['training']['model_sha256'][:16]}`.",
        "",
        "| metric | test slice (95% CI) |",
        "|---|---|",
        f"| AUROC | {_fmt(d['auroc'])} |",
        f"| AUPRC | {_fmt(d['auprc'])} |",
        f"| comparator AUROC | {_fmt(comp['auroc'])} |",
        f"| ECE | {_fmt(c['ece'], 4)} |",
        f"| calibration slope | {_fmt(c['slope'])} |",
        f"| calibration intercept | {_fmt(c['intercept'])} |",
        f"| Brier | {_fmt(c['brier'], 4)} |",
        f"| alerts per 100 ({evaluation['primary_threshold']}) | "
        f"{_fmt(primary['alerts_per_100'], 1)} |",
        "",
        "| gate | result | observed | required |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {g['name']} | {'pass' if g['passed'] else '**FAIL**'} | {g['observed']} | "
        f"{g['required']} |"
        for g in gates["gates"]
    ]
    return "\n".join(lines) + "\n"
