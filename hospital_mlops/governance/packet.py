"""The governance packet: everything a hospital's AI governance committee, privacy officer and
security reviewer ask for about one registered model version, in one zip, with a manifest of
sha256 for every file.

Layout (``index.html`` opens first; every page is self-contained):

- ``use_case/``: the use-case definition in force and the intended use as registered;
- ``data/``: the data-catalog entry of the source and the lineage of the training run;
- ``evidence/``: validation report, model card (HTML/JSON/XML), HTI-1 source attributes, gates
  and training record, each checked against the sha256 the registry recorded when the version
  was registered (the per-row data and the unsuppressed evaluation stay in the registry, listed
  by hash);
- ``policies/``: monitoring plan, rollout/rollback, fallback, retraining and retirement (the
  validated config in force, and the documents that explain it);
- ``signoffs.json``: the sign-offs, aliases and retirement status from the registry;
- ``supply_chain/``: licence inventory, CycloneDX SBOM, and the pip-audit result when given;
- ``review/``: the privacy and security review (governance/review.py);
- ``MANIFEST.json``: name, size and sha256 of every other file, and what is missing.

Nothing half-written is published: the zip is built beside its destination and renamed into
place. Anything that could not be included is listed in ``missing``, never silently dropped.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hospital_mlops import artifacts
from hospital_mlops.governance.review import Review
from hospital_mlops.render.page import page
from hospital_mlops.render.text import breakable

MANIFEST = "MANIFEST.json"
PACKET_FORMAT = 1
# Registered evidence that stays in the registry, listed by hash only: per-row data, and the
# exact evaluation numbers (small cells included) that the published reports suppress.
DATA_EVIDENCE = (artifacts.TEST_PREDICTIONS, artifacts.DRIFT_REFERENCE, artifacts.EVALUATION)
POLICY_CONFIGS = ("monitoring.yaml", "rollout.yaml", "fallback.yaml", "governance.yaml", "cds.yaml")
POLICY_DOCS = (
    "docs/monitoring.md", "docs/drift.md", "docs/rollout.md", "docs/fallback.md",
    "docs/runbooks/rollback.md", "docs/runbooks/retirement.md", "docs/runbooks/monitoring-alert.md",
    "docs/security.md", "docs/reliability.md",
)  # fmt: skip
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entries carry no wall-clock time: same files, same zip


class PacketError(RuntimeError):
    """The packet cannot be built truthfully (e.g. registered evidence changed)."""


@dataclass(frozen=True)
class PacketRequest:
    model: str
    version: int
    out: Path
    store: Path
    test_results: tuple[Path, ...] = ()  # JUnit XML files, read together
    pip_audit: Path | None = None


@dataclass
class Packet:
    path: Path
    files: list[dict[str, Any]]
    missing: list[str]
    review_failed: list[str] = field(default_factory=list)
    review_not_run: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "files": [{"name": f["name"], "sha256": f["sha256"]} for f in self.files],
            "missing": self.missing,
            "review_failed": self.review_failed,
            "review_not_run": self.review_not_run,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------------------------ sections


def _evidence(run_id: str, tags: dict[str, str], dest: Path, missing: list[str]) -> None:
    from hospital_mlops.governance import registry

    registered: dict[str, str] = json.loads(tags.get("evidence.sha256", "{}"))
    if not registered:
        raise PacketError(
            "the version carries no evidence.sha256 tag: it was not registered by "
            "this system's training step, so its evidence cannot be vouched for"
        )
    with tempfile.TemporaryDirectory() as tmp:  # no progress bars: registry.client() set that
        local = registry.download_artifacts(run_id, "evidence", Path(tmp))
        dest.mkdir(parents=True, exist_ok=True)
        for name, expected in sorted(registered.items()):
            path = local / name
            if not path.exists():
                missing.append(
                    f"{artifacts.evidence(name)}: registered but no longer in the artifact store"
                )
                continue
            actual = sha256_file(path)
            if actual != expected:
                raise PacketError(
                    f"evidence {name} changed since registration: registered sha256 {expected}, "
                    f"now {actual}. Do not hand this version to a review board before finding out "
                    "why (docs/security.md, 'Evidence integrity')."
                )
            if name not in DATA_EVIDENCE:
                shutil.copyfile(path, dest / name)
    _write_json(dest / "registered_sha256.json", registered)


def _data(
    tags: dict[str, str], store: Path, dest: Path, missing: list[str]
) -> list[dict[str, Any]]:
    """Write the catalog entry and the lineage; return the lineage chain (empty if none)."""
    from hospital_mlops.data.catalog import catalog_version, load_catalog
    from hospital_mlops.data.lineage import LineageNotFound, LineageStore

    catalog = load_catalog()
    source = tags.get("source", "")
    if source in catalog.sources:
        _write_json(dest / "catalog_entry.json", {
            "catalog_version": catalog.version,
            "catalog_content": catalog_version(catalog),
            "source": source,
            "entry": catalog.source(source).model_dump(mode="json"),
        })  # fmt: skip
    else:
        missing.append(f"data/catalog_entry.json: source {source!r} is not in the catalog now")
    run_id = tags.get("lineage.run_id", "")
    lineage = LineageStore(store)
    run = lineage.run(run_id) if run_id else None
    if run is None:
        missing.append(f"data/lineage.json: pipeline run {run_id or '(none tagged)'} is not in "
                       f"the lineage store {store} (give --store)")  # fmt: skip
        return []
    try:
        chain = [{"depth": d, **n} for d, n in lineage.chain(run_id)]
    except LineageNotFound as exc:
        missing.append(f"data/lineage.json: the chain of run {run_id} is incomplete: {exc}")
        chain = []
    _write_json(dest / "lineage.json", {"run": run, "chain": chain})
    return chain


def _use_case(
    tags: dict[str, str], training: dict[str, Any], dest: Path, missing: list[str]
) -> None:
    from hospital_mlops.governance.config import load_governance
    from hospital_mlops.paths import config_path
    from hospital_mlops.use_case import load_use_case

    dest.mkdir(parents=True, exist_ok=True)
    use_case = load_use_case()
    shutil.copyfile(config_path("use_case.yaml"), dest / "use_case.yaml")
    trained_under = str(training.get("use_case_version", ""))
    if trained_under and trained_under != use_case.content_version:
        missing.append(
            f"use_case/use_case.yaml: the use case changed since training (trained under "
            f"{trained_under}, now {use_case.content_version}); the file is the one in force now"
        )
    gov = load_governance()
    lines = [
        f"# Intended use: {tags.get('use_case', '')}",
        "",
        tags.get("intended_use", "(not registered)"),
        "",
        "## Risk assessment",
        "",
        tags.get("risk_assessment", gov.risk_assessment),
        "",
        f"- Clinical risk level: {gov.clinical_risk_level or 'MISSING (config/governance.yaml)'}",
        f"- Owner: {tags.get('owner', '')}",
        f"- Patient consent or disclosure: {gov.patient_consent_or_disclosure or 'MISSING'}",
        f"- Relevance to the deployed setting: {gov.relevance_to_deployed_setting or 'MISSING'}",
        f"- Use-case version the model was trained under: {trained_under or 'unknown'}",
    ]
    (dest / "intended_use.md").write_text("\n".join(lines) + "\n")


def _post_hoc_justifications(gates: Path) -> list[str]:
    """The subgroup justifications written after the evaluation that raised their flags, as
    the registered gate record kept them: a reader must know they were not declared before."""
    if not gates.exists():
        return []
    record = json.loads(gates.read_text())
    if "justifications" not in record:
        return [
            "evidence/gates.json: registered before justifications carried who wrote them and "
            "when; whether any was written after the evaluation is not recorded"
        ]
    return [
        f"use_case: the justification of {j['flag']} was written after an evaluation of this "
        f"model had raised the flag (by {j['by']}, on {j['written_on']}; this version was "
        f"evaluated on {j['evaluated_on']}): post hoc, not declared beforehand"
        for j in record["justifications"]
        if j["post_hoc"]
    ]


def _policies(dest: Path, missing: list[str]) -> None:
    from hospital_mlops.paths import config_path, project_root

    dest.mkdir(parents=True, exist_ok=True)
    for name in POLICY_CONFIGS:
        source = config_path(name)
        if source.exists():
            shutil.copyfile(source, dest / name)
        else:
            missing.append(f"policies/{name}: not found at {source}")
    for doc in POLICY_DOCS:
        source = project_root() / doc
        if source.exists():
            shutil.copyfile(source, dest / Path(doc).name)
        else:
            missing.append(f"policies/{Path(doc).name}: {doc} is not in this installation")


def _signoffs(model: str, mv: Any, aliases: list[str], dest: Path, missing: list[str]) -> None:
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.config import load_governance
    from hospital_mlops.governance.registry import retired

    required = list(load_governance().required_signoffs)
    signed = registry.signoffs(mv)
    absent = [r for r in required if r not in signed]
    missing += [f"signoffs.json: no {role} sign-off" for role in absent]
    demo = sorted(r for r, s in signed.items() if "DEMO" in s.get("by", ""))
    if demo:
        missing.append(f"signoffs.json: the {', '.join(demo)} sign-offs are labelled demo "
                       "sign-offs, not a real review")  # fmt: skip
    _write_json(dest, {
        "model": model, "version": int(mv.version), "aliases": aliases,
        "required": required, "signed": signed, "missing_roles": absent,
        "gates_passed": mv.tags.get("gates.passed") == "true", "retired": retired(mv),
    })  # fmt: skip


def _supply_chain(dest: Path, pip_audit: Path | None, missing: list[str]) -> list[str]:
    from hospital_mlops.governance.licenses import inventory, write_inventory
    from hospital_mlops.governance.sbom import write_sbom

    records = inventory()
    write_inventory(records, dest / "licenses.csv")
    write_sbom(dest / "sbom.cdx.json")
    if pip_audit is not None:
        shutil.copyfile(pip_audit, dest / "pip-audit.json")
    else:
        missing.append(
            "supply_chain/pip-audit.json: no pip-audit result given (`make audit`; "
            "see docs/security.md when the vulnerability service is unreachable)"
        )
    return [r.name for r in records if r.osi_approved is False]


# -------------------------------------------------------------------------------------- build


def build_packet(request: PacketRequest) -> Packet:
    from hospital_mlops.governance import registry
    from hospital_mlops.governance import review as checks
    from hospital_mlops.governance.phi_scan import source_identifiers

    c = registry.client()
    mv = registry.model_version(c, request.model, request.version)
    run = c.get_run(mv.run_id)
    tags = dict(mv.tags)
    aliases = sorted(a for a, v in (c.get_registered_model(request.model).aliases or {}).items()
                     if str(v) == str(mv.version))  # fmt: skip
    missing: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "packet"
        _evidence(mv.run_id, tags, root / "evidence", missing)
        training_path = root / artifacts.EVIDENCE_DIR / artifacts.TRAINING
        training = json.loads(training_path.read_text()) if training_path.exists() else {}
        chain = _data(tags, request.store, root / "data", missing)
        _use_case(tags, training, root / "use_case", missing)
        missing += _post_hoc_justifications(root / artifacts.EVIDENCE_DIR / artifacts.GATES)
        _policies(root / "policies", missing)
        _signoffs(request.model, mv, aliases, root / "signoffs.json", missing)
        not_osi = _supply_chain(root / "supply_chain", request.pip_audit, missing)

        identifiers = source_identifiers(tags.get("source", ""))
        registry_texts = {
            **{f"param {k}": f"{k} {v}" for k, v in run.data.params.items()},
            **{f"metric {k}": k for k in run.data.metrics},
            **{f"run tag {k}": f"{k} {v}" for k, v in run.data.tags.items()},
            **{f"version tag {k}": f"{k} {v}" for k, v in tags.items()},
        }
        found = [
            checks.registry_phi_check(registry_texts, identifiers),
            checks.packet_phi_check(root, identifiers),
            checks.demo_key_check(chain),
            checks.telemetry_check(),
            checks.licence_check(not_osi),
            checks.pip_audit_check(request.pip_audit),
        ]
        result = checks.review(request.test_results, found)
        missing += [
            f"review {c.id} ({c.status}): {c.detail.split('. ')[0][:160]}"
            for c in found
            if c.status in ("warning", "failed", "not run")
        ]
        if not request.test_results:
            missing.append("review: no test results given, so the test-backed controls are "
                           "'not run' (`make test` writes out/test-results.xml)")  # fmt: skip
        else:
            missing += [
                f"review control {r.control.id} (not run): {r.why_not_run or 'no test passed'}"
                for r in result.controls
                if r.status == "not run"
            ]
        _write_json(root / "review" / "privacy_security_review.json", result.as_dict())
        (root / "review" / "privacy_security_review.html").write_text(review_html(result))
        (root / "index.html").write_text(
            index_html(request.model, request.version, aliases, result, missing)
        )
        files = _manifest(root, request, missing)
        _zip(root, request.out)
    return Packet(request.out, files, missing, result.failed, result.not_run)


def _manifest(root: Path, request: PacketRequest, missing: list[str]) -> list[dict[str, Any]]:
    files = [
        {
            "name": p.relative_to(root).as_posix(),
            "sha256": sha256_file(p),
            "bytes": p.stat().st_size,
        }
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    _write_json(root / MANIFEST, {
        "packet_format": PACKET_FORMAT,
        "model": request.model,
        "version": request.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "missing": missing,
    })  # fmt: skip
    return files


def _zip(root: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    info = zipfile.ZipInfo(path.relative_to(root).as_posix(), _FIXED_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- verify


@dataclass
class Verification:
    path: Path
    model: str = ""
    version: int | None = None
    checked: int = 0
    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not (self.altered or self.missing or self.added or self.error)


def verify_packet(path: Path) -> Verification:
    """Re-hash every file against the manifest and name what changed."""
    result = Verification(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        result.error = f"{path} is not a readable zip: {exc}"
        return result
    with archive:
        names = set(archive.namelist())
        if MANIFEST not in names:
            result.error = f"{path} has no {MANIFEST}: not a governance packet"
            return result
        try:
            manifest = json.loads(archive.read(MANIFEST))
            listed = {f["name"]: f["sha256"] for f in manifest["files"]}
        except (ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            result.error = f"{MANIFEST} is unreadable: {exc}"
            return result
        result.model, result.version = manifest.get("model", ""), manifest.get("version")
        for name, expected in sorted(listed.items()):
            if name not in names:
                result.missing.append(name)
                continue
            try:
                actual = hashlib.sha256(archive.read(name)).hexdigest()
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error):  # bytes changed in place
                actual = "unreadable"
            result.checked += 1
            if actual != expected:
                result.altered.append(name)
        result.added = sorted(names - set(listed) - {MANIFEST})
    return result


# --------------------------------------------------------------------------------------- html

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1a1a1a}"
    "table{border-collapse:collapse;width:100%;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.35rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}"
    ".failed{background:#fde8e8}.warning{background:#fff6db}.notrun{color:#666}"
    "code{font-size:.9em}"
)


def _page(title: str, body: str) -> str:
    return page(title, body, _CSS)


def _status_class(status: str) -> str:
    return {"failed": "failed", "warning": "warning", "not run": "notrun"}.get(status, "")


def review_html(result: Review) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='{_status_class(r.status)}'><td>{e(r.control.area)}</td><td>"
        f"{breakable(r.control.claim)}</td><td>{breakable(r.control.covers)}</td>"
        f"<td><b>{e(r.status)}</b> "
        f"({r.passed} passed, {r.failed} failed, {r.skipped} skipped)"
        + "".join(f"<br><code>{e(f)}</code>" for f in r.failures)
        + (f"<br>{e(r.why_not_run)}" if r.status == "not run" and r.why_not_run else "")
        + f"</td><td>{'<br>'.join(f'<code>{e(t)}</code>' for t in r.control.tests)}</td></tr>"
        for r in result.controls
    )
    checks = "".join(
        f"<tr class='{_status_class(c.status)}'><td>{e(c.area)}</td><td>{breakable(c.claim)}</td>"
        f"<td><b>{e(c.status)}</b></td><td>{breakable(c.detail)}</td></tr>"
        for c in result.checks
    )
    body = (
        "<h1>Privacy and security review</h1>"
        "<p>Generated from the checks, with their results. Test-backed controls come from the "
        f"test results <code>{e(result.test_results)}</code>; the checks below them were made on "
        "this installation when the packet was built. The threat model is in "
        "<code>policies/security.md</code>.</p>"
        "<h2>Controls backed by tests</h2><div class='wide'><table><tr><th>area</th><th>claim</th>"
        f"<th>covers</th><th>result</th><th>tests</th></tr>{rows}</table></div>"
        "<h2>Checks made when the packet was built</h2><div class='wide'><table><tr><th>area</th>"
        f"<th>claim</th><th>result</th><th>detail</th></tr>{checks}</table></div>"
    )
    return _page("Privacy and security review", body)


def index_html(
    model: str, version: int, aliases: list[str], result: Review, missing: list[str]
) -> str:
    e = html.escape
    sections = [
        ("use_case/intended_use.md", "intended use and risk assessment"),
        ("use_case/use_case.yaml", "the use-case definition (gates, thresholds, subgroups)"),
        ("data/catalog_entry.json", "data-catalog entry of the source"),
        ("data/lineage.json", "lineage of the training run back to the source extract"),
        (artifacts.evidence(artifacts.VALIDATION_REPORT_HTML), "locked validation report"),
        (artifacts.evidence(artifacts.MODEL_CARD_HTML), "model card"),
        (artifacts.evidence(artifacts.HTI1_ATTRIBUTES), "ONC HTI-1 source attributes"),
        ("review/privacy_security_review.html", "privacy and security review"),
        ("policies/", "monitoring plan, rollout/rollback, fallback, retraining and retirement"),
        ("signoffs.json", "sign-offs, aliases, retirement status"),
        ("supply_chain/licenses.csv", "licence inventory"),
        ("supply_chain/sbom.cdx.json", "CycloneDX SBOM"),
        ("MANIFEST.json", "sha256 of every file; `hmlops governance verify` re-checks them"),
    ]
    listing = "".join(f"<tr><td><code>{e(p)}</code></td><td>{e(d)}</td></tr>" for p, d in sections)
    gaps = "".join(f"<li>{e(m)}</li>" for m in missing) or "<li>nothing</li>"
    failed = ", ".join(result.failed) or "none"
    not_run = ", ".join(result.not_run) or "none"
    body = (
        f"<h1>Governance packet: {e(model)} version {version}</h1>"
        f"<p>Aliases: {e(', '.join(aliases) or 'none')}. Review items failed: {e(failed)}. "
        f"Review items not run (not shown to hold): {e(not_run)}.</p>"
        f"<h2>Contents</h2><table><tr><th>file</th><th>what</th></tr>{listing}</table>"
        f"<h2>Missing or needing attention</h2><ul>{gaps}</ul>"
    )
    return _page(f"Governance packet {model} v{version}", body)
