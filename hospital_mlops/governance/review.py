"""The privacy and security review in the governance packet: the test-backed controls with their
results, plus the checks that can only be made on this installation, made now.

Live checks (each passed / failed / warning / not run, with what was seen):
- the model version's MLflow params, tags and metrics, and the packet's own files, hold no raw
  identifier from the source extract (when the extract is readable here);
- the data behind the model was not tokenized with the labelled demo key;
- the no-phone-home switches are in effect;
- non-OSI licences are named, with the permissive configuration that avoids them;
- the pip-audit result, when one is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hospital_mlops.governance.controls import ControlResult, Status, evaluate, read_junit
from hospital_mlops.quiet import SWITCHES


@dataclass(frozen=True)
class ReviewCheck:
    id: str
    area: str
    claim: str
    status: Status
    detail: str


def telemetry_check(env: dict[str, str] | None = None) -> ReviewCheck:
    env = dict(os.environ if env is None else env)
    wrong = {k: env.get(k) for k, v in SWITCHES.items() if env.get(k, "").lower() != v}
    return ReviewCheck(
        "telemetry-off", "egress", "The libraries' usage telemetry is switched off.",
        "failed" if wrong else "passed",
        f"not set as required: {wrong}" if wrong else
        ", ".join(f"{k}={v}" for k, v in SWITCHES.items()),
    )  # fmt: skip


def demo_key_check(chain: list[dict[str, Any]] | None) -> ReviewCheck:
    """Read the tokenization key from the training data's lineage (its id only: a hash)."""
    claim = "The training data was tokenized with a site key, not the labelled demo key."
    if not chain:
        return ReviewCheck("site-hmac-key", "privacy", claim, "not run", "the lineage is missing")
    key_ids = sorted({str(n["hmac_key_id"]) for n in chain if n.get("hmac_key_id")})
    demo = any(n.get("demo_key") for n in chain) or any(k.startswith("demo-") for k in key_ids)
    if not key_ids and not demo:
        return ReviewCheck("site-hmac-key", "privacy", claim, "not run",
                     "the lineage records no tokenization key")  # fmt: skip
    if demo:
        return ReviewCheck(
            "site-hmac-key", "privacy", claim, "warning",
            f"tokenized with the DEMO key ({', '.join(key_ids)}): its tokens protect nothing; "
            "fine for the bundled public dataset, never for real PHI",
        )  # fmt: skip
    return ReviewCheck("site-hmac-key", "privacy", claim, "passed", f"key id {', '.join(key_ids)}")


def registry_phi_check(texts: dict[str, str], identifiers: set[str] | None) -> ReviewCheck:
    """Scan the version's MLflow params, tags and metric names (``texts``: where → text)."""
    from hospital_mlops.governance.phi_scan import scan_texts

    claim = "The model version's MLflow params, tags and metrics hold no raw identifier."
    if identifiers is None:
        return ReviewCheck("phi-registry", "privacy", claim, "not run", "the source extract is not "
                     "readable here, so there is nothing to compare against")  # fmt: skip
    hits = scan_texts(texts, identifiers)
    if hits:
        return ReviewCheck("phi-registry", "privacy", claim, "failed",
                     f"{len(hits)} found, in: {sorted({w for w, _ in hits})[:10]}")  # fmt: skip
    return ReviewCheck("phi-registry", "privacy", claim, "passed",
                 f"{len(texts)} values scanned against {len(identifiers)} identifiers")  # fmt: skip


def packet_phi_check(root: Path, identifiers: set[str] | None) -> ReviewCheck:
    from hospital_mlops.governance.phi_scan import scan

    claim = "No file of this packet holds a raw identifier."
    if identifiers is None:
        return ReviewCheck("phi-packet", "privacy", claim, "not run", "the source extract is not "
                     "readable here")  # fmt: skip
    hits = scan(root, identifiers)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    if hits:
        where = sorted({w.replace(str(root) + "/", "") for w, _ in hits})[:10]
        return ReviewCheck(
            "phi-packet", "privacy", claim, "failed", f"{len(hits)} found, in: {where}"
        )
    return ReviewCheck("phi-packet", "privacy", claim, "passed", f"{files} files scanned")


def licence_check(not_osi: list[str]) -> ReviewCheck:
    claim = "Every dependency's licence is known; non-OSI licences are named."
    if not not_osi:
        return ReviewCheck("licences", "supply chain", claim, "passed", "all OSI-approved")
    return ReviewCheck(
        "licences", "supply chain", claim, "warning",
        f"not OSI-approved: {', '.join(not_osi)}. alibi and alibi-detect are Business Source "
        "License 1.1: production use needs a licence from Seldon (non-profit educational "
        "institutions excepted). The permissive configuration (explainer: pred_contribs; drift: "
        "scipy) serves without them; see docs/serving.md.",
    )  # fmt: skip


def pip_audit_check(report: Path | None) -> ReviewCheck:
    """Read a pip-audit JSON report. A dependency pip-audit skipped was not audited: when the
    vulnerability service cannot be reached it skips every one and still says "No known
    vulnerabilities found", so skips are counted, never taken for a pass."""
    claim = "No installed dependency has a known vulnerability (pip-audit)."
    if report is None:
        return ReviewCheck("pip-audit", "supply chain", claim, "not run",
                     "no pip-audit result given (`make audit`, then --pip-audit FILE)")  # fmt: skip
    try:
        data = json.loads(report.read_text())
        deps = data["dependencies"] if isinstance(data, dict) else data
        vulnerable = {d["name"]: [v["id"] for v in d.get("vulns", [])] for d in deps}
        skipped = {d["name"]: str(d["skip_reason"]) for d in deps if d.get("skip_reason")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ReviewCheck("pip-audit", "supply chain", claim, "failed",
                     f"{report.name} is not a pip-audit JSON report: {exc}")  # fmt: skip
    skipped.pop("hospital-mlops", None)  # this project is not on PyPI: nothing to look up
    vulnerable.pop("hospital-mlops", None)
    found = {name: ids for name, ids in vulnerable.items() if ids}
    if found:
        listed = "; ".join(f"{n}: {', '.join(i)}" for n, i in sorted(found.items()))
        return ReviewCheck("pip-audit", "supply chain", claim, "failed", listed)
    audited = len(vulnerable) - len(skipped)
    if audited == 0:
        first = next(iter(skipped.values()), "no dependencies in the report")
        return ReviewCheck(
            "pip-audit", "supply chain", claim, "not run",
            f"pip-audit could not audit any of {len(skipped)} dependencies (the vulnerability "
            f"service was unreachable from here; first reason: {first}). Run `make audit` where "
            "PyPI's JSON API or OSV answers, or audit requirements.lock offline against a "
            "mirrored advisory database (docs/security.md).",
        )  # fmt: skip
    if skipped:
        return ReviewCheck("pip-audit", "supply chain", claim, "warning",
                     f"{audited} dependencies audited, none vulnerable; {len(skipped)} could not "
                     f"be audited: {', '.join(sorted(skipped)[:10])}")  # fmt: skip
    return ReviewCheck("pip-audit", "supply chain", claim, "passed",
                 f"{audited} dependencies audited, none vulnerable")  # fmt: skip


@dataclass(frozen=True)
class Review:
    controls: list[ControlResult]
    checks: list[ReviewCheck]
    test_results: str  # where the control results came from

    def as_dict(self) -> dict[str, Any]:
        return {
            "test_results": self.test_results,
            "controls": [
                {
                    **asdict(r.control),
                    "status": r.status,
                    "tests_passed": r.passed,
                    "tests_failed": r.failed,
                    "tests_skipped": r.skipped,
                    "failures": list(r.failures),
                    "selectors_without_results": list(r.not_found),
                    "skipped_tests": list(r.skipped_tests),
                }
                for r in self.controls
            ],
            "checks": [asdict(c) for c in self.checks],
        }

    @property
    def failed(self) -> list[str]:
        return [r.control.id for r in self.controls if r.status == "failed"] + [
            c.id for c in self.checks if c.status == "failed"
        ]

    @property
    def not_run(self) -> list[str]:
        """What was not shown to hold: never counted as a pass (``--strict`` fails on it)."""
        return [r.control.id for r in self.controls if r.status == "not run"] + [
            c.id for c in self.checks if c.status == "not run"
        ]


def review(test_results: Sequence[Path], checks: list[ReviewCheck]) -> Review:
    """The controls judged on every JUnit file given together (`make test` writes one, each
    part of `make test-cluster` its own), and the checks made now."""
    if not test_results:
        source = "no test results given: every test-backed control is 'not run'"
        return Review(evaluate(None), checks, source)
    cases = [case for path in test_results for case in read_junit(path)]
    return Review(evaluate(cases), checks, ", ".join(p.name for p in test_results))
