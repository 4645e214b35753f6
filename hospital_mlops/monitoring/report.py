"""The monitoring report: one self-contained HTML page (inline SVG, no script, no external
asset) that opens on an air-gapped hospital network. It renders a monitoring run's JSON and
computes nothing new. Counts below ``SMALL_CELL`` are shown as "<11" (the common small-cell
rule), and the page says so."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from hospital_mlops.monitoring.workflow import NO_REASON
from hospital_mlops.render.page import page
from hospital_mlops.render.plots import svg
from hospital_mlops.render.small_cells import SMALL_CELL, count_html
from hospital_mlops.render.tables import table

_WINDOW_HEADER = [
    "window",
    "predictions",
    "with outcomes",
    "input drift",
    "score drift",
    "est. AUROC",
    "AUROC (95% CI)",
    "ECE",
    "obs/exp",
    "alerts /100",
    "answered",
    "overridden",
    "ignored",
]


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _starts(windows: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(w["start"].replace("Z", "+00:00")) for w in windows]


def label_form(windows: list[dict[str, Any]], window_hours: float) -> str:
    """The windows' resolution, as a strftime form: the date for whole days starting at
    midnight, else the hour and minute, else the seconds (windows never share a start)."""
    starts = _starts(windows)
    daily = window_hours % 24 == 0 and all(
        (t.hour, t.minute, t.second) == (0, 0, 0) for t in starts
    )
    forms = (["%Y-%m-%d"] if daily else []) + ["%Y-%m-%d %H:%M"]
    for form in forms:
        if len({t.strftime(form) for t in starts}) == len(starts):
            return form
    return "%Y-%m-%d %H:%M:%S"


def window_labels(windows: list[dict[str, Any]], window_hours: float) -> list[str]:
    """Each window's start at the windows' resolution (``label_form``)."""
    form = label_form(windows, window_hours)
    return [t.strftime(form) for t in _starts(windows)]


def _span(window: dict[str, Any], label: str, form: str) -> str:
    """A window as ``start → end``, both at the windows' resolution."""
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    return f"{label} → {end.strftime(form)}"


def _plots(run: dict[str, Any], labels: list[str]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: no font files
    windows = run["windows"]
    x = list(range(len(windows)))
    base = run["baseline"]
    out: dict[str, str] = {}

    # drift as a size against its threshold, never a p-value: an owner judges how far it moved
    fig, (score_ax, input_ax) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    distance = [w.get("score_drift_distance", 0.0) for w in windows]
    limit = [w.get("score_drift_distance_threshold", 1.0) for w in windows]
    score_ax.plot(x, distance, marker="o", color="#1f5fa8",
                  label="KS distance of the risks from the validated period")  # fmt: skip
    score_ax.step(x, limit, where="mid", linestyle="--", color="#a1161b",
                  label="threshold: the distance the policy alerts at")  # fmt: skip
    beyond = [i for i in x if distance[i] > limit[i]]
    if beyond:
        score_ax.scatter(beyond, [distance[i] for i in beyond], color="#a1161b", s=50, zorder=3,
                         label="beyond its threshold")  # fmt: skip
    score_ax.set_ylim(0, max([*distance, *limit, 0.01]) * 1.25)
    score_ax.set_ylabel("KS distance (0 = same, 1 = disjoint)")
    score_ax.set_title("Score", fontsize=9)
    score_ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    score_ax.legend(fontsize=6, loc="upper left")
    tested = [i for i, w in enumerate(windows) if w["data_drift"] is not None]
    ratio = {
        i: max(m["magnitude"] / max(m["threshold"], 1e-12) for m in w["moved_inputs"])
        for i, w in enumerate(windows)
        if w.get("moved_inputs")
    }
    if ratio:
        input_ax.bar(list(ratio), list(ratio.values()), color="#b5651d",
                     label="largest input move ÷ its calibrated threshold")  # fmt: skip
    quiet = [i for i in tested if i not in ratio]
    if quiet:
        input_ax.scatter(
            quiet,
            [0.0] * len(quiet),
            marker="o",
            facecolors="none",
            edgecolors="#11643a",
            label="tested: every input within its threshold",
        )
    input_ax.axhline(1.0, linestyle="--", color="#a1161b", label="threshold")
    input_ax.set_ylim(0, max([*ratio.values(), 1.0]) * 1.3)
    input_ax.set_ylabel("× threshold")
    input_ax.set_title("Inputs (the drift detector's windows)", fontsize=9)
    input_ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    input_ax.set_xlim(-0.6, len(windows) - 0.4)
    input_ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    out["drift"] = svg(
        fig,
        "Drift per window as a size against its threshold: the KS distance of the risks from "
        "the validated period with the distance the policy alerts at, and the largest input "
        "move the drift detector measured as a multiple of its calibrated threshold",
    )
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    realized = [(i, w) for i, w in enumerate(windows) if w["auroc"] is not None]
    if realized:
        ax.errorbar(
            [i for i, _ in realized],
            [w["auroc"] for _, w in realized],
            yerr=[
                [w["auroc"] - w["auroc_ci"][0] for _, w in realized],
                [w["auroc_ci"][1] - w["auroc"] for _, w in realized],
            ],
            marker="o",
            color="#1f5fa8",
            label="realized AUROC (95% CI)",
            linestyle="none",
        )
    ax.plot(
        x,
        [w["estimated_auroc"] for w in windows],
        marker="x",
        color="#b5651d",
        linestyle=":",
        label="estimated from the risks (before outcomes)",
    )
    ax.axhline(base["auroc"], color="#11643a", label="validated")
    ax.axhline(
        base["auroc"] - run["policy"]["auroc_drop"],
        color="#a1161b",
        linestyle="--",
        label="alert floor",
    )
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=7, loc="lower left")
    out["performance"] = svg(
        fig,
        "Discrimination per window: the realized AUROC with its 95% confidence interval once "
        "outcomes arrive, the AUROC estimated from the risks, the validated AUROC and the floor "
        "the policy alerts below",
    )
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    top = 0.0
    for w, label in zip(windows, labels, strict=True):
        bands = [b for b in w["calibration"] if "observed_rate" in b]
        if not bands:
            continue
        xs = [b["expected_rate"] for b in bands]
        ys = [b["observed_rate"] for b in bands]
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=label)
    top = (top or 0.5) * 1.08
    ax.plot([0, top], [0, top], linestyle="--", color="#888", label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted risk (band mean)")
    ax.set_ylabel("observed outcome rate")
    ax.legend(fontsize=6, loc="upper left")
    out["calibration"] = svg(
        fig,
        "Calibration per window: the observed outcome rate against the predicted risk in each "
        "risk band, one line per window with outcomes, and the line of perfect calibration",
    )
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.bar(x, [w["alerts_per_100"] for w in windows], color="#1f5fa8", label="alerts per 100")
    ax.axhline(base["alerts_per_100"], color="#11643a", label="validated")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("alerts per 100 encounters")
    ax.legend(fontsize=7)
    out["burden"] = svg(
        fig, "Alert burden: alerts per 100 encounters in each window against the validated rate"
    )
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ack = [w["acknowledgement_rate"] for w in windows]
    over = [w["override_rate"] for w in windows]
    if any(v is not None for v in ack + over):
        ax.plot(
            x,
            [v if v is not None else float("nan") for v in ack],
            marker="o",
            color="#11643a",
            label="answered in time",
        )
        ax.plot(
            x,
            [v if v is not None else float("nan") for v in over],
            marker="s",
            color="#a1161b",
            label="overridden (of answered)",
        )
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    else:
        ax.text(
            0.5,
            0.5,
            "no clinician responses recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of alerts")
    out["workflow"] = svg(
        fig,
        "Clinicians' responses per window: the share of alerts answered in time and the share "
        "of answered alerts overridden",
    )
    plt.close(fig)
    return out


def monitoring_html(run: dict[str, Any]) -> str:
    """``run``: ``MonitoringRun.as_dict()`` plus ``policy`` (the thresholds the plots draw)."""
    esc = html.escape
    windows = run["windows"]
    hours = float(run["policy"].get("window_hours", 24))
    form = label_form(windows, hours)
    labels = window_labels(windows, hours)
    plots = _plots(run, labels) if windows else {}
    base = run["baseline"]
    window_rows = [
        [
            esc(_span(w, label, form)),
            count_html(w["n"]),
            count_html(w["n_outcomes"]),
            {True: "drift", False: "none", None: "not tested"}[w["data_drift"]],
            ("drift" if w["score_drift"] else "none")
            + f" (KS {w.get('score_drift_distance', 0.0):.3f})",
            _num(w["estimated_auroc"]),
            _num(w["auroc"])
            + (f" ({w['auroc_ci'][0]:.3f}–{w['auroc_ci'][1]:.3f})" if w["auroc_ci"] else ""),
            _num(w["ece"]),
            _num(w["observed_to_expected"], 2),
            f"{w['alerts_per_100']:.1f}",
            _num(w["acknowledgement_rate"], 2),
            _num(w["override_rate"], 2),
            count_html(w["ignored"]) if w["acknowledgement_rate"] is not None else "—",
        ]
        for w, label in zip(windows, labels, strict=True)
    ]
    alert_rows = [
        [esc(a["severity"]), esc(a["kind"]), esc(a["owner"]), esc(a["message"])]
        for a in run["alerts"]
    ]
    alert_class = ["flag" if a["severity"] == "critical" else "" for a in run["alerts"]]
    # Only the configured reasons are named: anything else (free text recorded through the
    # API without the list) is counted, never shown, as it could carry a patient's details.
    configured = set(run["policy"].get("override_reasons", ()))
    other = "other (not a configured reason; not shown)"
    reasons: dict[str, int] = {}
    for w in windows:
        for reason, n in w["override_reasons"].items():
            key = reason if reason in configured or reason == NO_REASON else other
            reasons[key] = reasons.get(key, 0) + n
    reason_rows = [[esc(r), count_html(n)] for r, n in sorted(reasons.items())]
    alerts_table = (
        table(["severity", "kind", "owner", "message"], alert_rows, alert_class)
        if alert_rows
        else "<p>No alerts.</p>"
    )
    breakdown_section = _breakdowns(run.get("breakdowns", []))
    calibration_section = _subgroup_calibration(run.get("subgroup_calibration"))
    made = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    figure = "".join(
        f"<h3>{esc(title)}</h3>{plots[key]}"
        for key, title in (
            ("drift", "Drift over time"),
            ("performance", "Discrimination: realized and estimated"),
            ("calibration", "Calibration per window (predictions with outcomes)"),
            ("burden", "Alert burden"),
            ("workflow", "Clinicians' responses to alerts"),
        )
        if key in plots
    )
    body = f"""<h1>Monitoring report: {esc(run["model"])}</h1>
<p class="note">Made {made} from {run["predictions"]:,} logged predictions
({run["with_outcomes"]:,} with outcomes) in {len(windows)} windows. Baseline: the validated
(test) period of this version: AUROC {base["auroc"]:.3f}, ECE {base["ece"]:.3f},
{base["alerts_per_100"]:.1f} alerts per 100 encounters. Counts below {SMALL_CELL} are shown as
"&lt;{SMALL_CELL}". "Estimated" AUROC comes from the calibrated risks before outcomes arrive; it
is only as good as the calibration.</p>
<h2>Alerts ({len(run["alerts"])})</h2>
{alerts_table}
<h2>Windows</h2>
{table(_WINDOW_HEADER, window_rows)}
<h2>Plots</h2>
{figure}
<h2>Override reasons</h2>
{table(["reason", "overrides"], reason_rows) if reason_rows else "<p>None recorded.</p>"}
{breakdown_section}
{calibration_section}
"""
    return page(f"Monitoring report — {run['model']}", body)


def _breakdowns(cells: list[dict[str, Any]]) -> str:
    """The latest window's cells per break-down; suppressed cells listed without numbers."""
    if not cells:
        return ""
    esc = html.escape
    latest = max(c["window_start"] for c in cells)
    rows, classes = [], []
    for c in sorted(
        (c for c in cells if c["window_start"] == latest),
        key=lambda c: (c["breakdown"], c["group"]),
    ):
        if c["suppressed"]:
            rows.append([esc(c["breakdown"]), esc(c["group"]), f"&lt;{SMALL_CELL}"] + ["—"] * 5)
        else:
            rows.append(
                [
                    esc(c["breakdown"]),
                    esc(c["group"]),
                    count_html(c["n"]),
                    f"{c['alerts_per_100']:.1f}",
                    _num(c["expected_event_rate"]),
                    _num(c["observed_event_rate"]),
                    _num(c["observed_to_expected"], 2),
                    _num(c["auroc"]),
                ]
            )
        off = c["observed_to_expected"]
        classes.append("flag" if off is not None and not 0.8 <= off <= 1.25 else "")
    header = ["break-down", "group", "n", "alerts / 100", "expected rate", "observed rate",
              "observed / expected", "AUROC"]  # fmt: skip
    return (
        f"<h2>By subgroup (window starting {esc(latest[:10])})</h2>"
        f'<p class="note">Groups with fewer than {SMALL_CELL} predictions are listed without '
        "numbers. Observed/expected outside 0.8–1.25 is flagged. AUROC is a point estimate, "
        "shown once the group has enough outcomes; the window's own numbers carry the CIs.</p>"
        + table(header, rows, classes)
    )


def _calibration_numbers(c: dict[str, Any]) -> list[str]:
    """A subgroup cell's numbers; a suppressed cell's are not shown."""
    if c["suppressed"]:
        return [f"&lt;{SMALL_CELL}"] + ["—"] * 6
    band = c.get("band") or {}
    ci, expected, noise = c.get("oe_ci"), c.get("expected_events"), c.get("ece_noise")
    return [
        count_html(c.get("n")),
        count_html(c.get("n_outcomes")),
        count_html(c.get("observed_events")) + ("" if expected is None else f" / {expected:.1f}"),
        _num(c.get("observed_to_expected"), 2) + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else ""),
        f"{_num(band.get('oe_low'), 2)}–{_num(band.get('oe_high'), 2)}" if band else "—",
        _num(c.get("ece")) + ("" if noise is None else f" (± {noise:.3f})"),
        f"≤ {_num(band.get('ece_high'))}" if band else "—",
    ]


def _subgroup_calibration(section: dict[str, Any] | None) -> str:
    """Calibration by subgroup on matured outcomes: every alerting cell, and the latest assessed
    window's cells; windows still waiting for outcomes are listed as such, never as passing."""
    if not section:
        return ""
    esc = html.escape
    head = "<h2>Calibration by subgroup (matured outcomes)</h2>"
    if section["status"] != "run":
        return f"{head}<p>Not run: {esc(str(section.get('reason') or ''))}</p>"
    assessed = [w for w in section["windows"] if w["status"] == "run"]
    latest = assessed[-1]["start"] if assessed else None
    rows, classes = [], []
    for w in assessed:
        for c in w["cells"]:
            if c["status"] != "alert" and w["start"] != latest:
                continue
            when = esc(f"{w['start'][:10]} → {w['end'][:10]}")
            named = [when, esc(c["breakdown"]), esc(c["group"]), esc(c["status"])]
            rows.append([*named, *_calibration_numbers(c)])
            classes.append("flag" if c["status"] == "alert" else "")
    waiting = [
        f"<li>{esc(w['start'][:10])} → {esc(w['end'][:10])}: {esc(w['status'].replace('_', ' '))}"
        f" ({esc(str(w.get('reason') or ''))})</li>"
        for w in section["windows"]
        if w["status"] != "run"
    ]
    header = ["window", "break-down", "group", "status", "n", "with outcomes",
              "events obs. / exp.", "O/E (CI)", "O/E band", "ECE (noise)", "ECE band"]  # fmt: skip
    note = (
        f'<p class="note">{esc(section["rule"])} Declared false-alarm rate '
        f"{section['false_alarm_rate']:g} per window over {section['tests_per_window']} tests. "
        f"Groups with fewer than {SMALL_CELL} predictions, outcomes or events are listed "
        "without numbers. Shown: every alerting cell, and the latest assessed window.</p>"
    )
    cells = (
        table(header, rows, classes)
        if rows
        else f"<p>{'No subgroup cells.' if assessed else 'No window has matured yet.'}</p>"
    )
    pending = f"<p>Not assessed:</p><ul>{''.join(waiting)}</ul>" if waiting else ""
    return head + note + cells + pending
