"""The security and privacy controls a hospital's reviewers ask about, each tied to the tests
that back it, and their results read from the test suite's JUnit XML (``make test`` writes
``out/test-results.xml``).

A control is "passed" only when all of its tests ran and passed: every test selector it names
matched at least one test in the results, and none of them was skipped. "failed" when any
failed; "not run" otherwise (no results, a selector that matched nothing — an old results file,
a deselected suite, a control whose tests are not in this build — or a skipped test), with what
did not run named. A control never passes on the tests that happened to run. Nothing is
inferred from the control's wording.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "not run", "warning"]


@dataclass(frozen=True)
class Control:
    id: str
    area: str
    claim: str
    covers: str
    tests: tuple[str, ...]  # dotted test-module paths, optionally "::test_name_prefix"


CONTROLS: tuple[Control, ...] = (
    Control(
        "phi-ingest", "privacy",
        "Raw identifiers are tokenized in the ingest layer and appear in no later layer.",
        "every Parquet column and text artifact of a pipeline run, and its log output",
        ("tests.integration.test_pipeline_kfp::test_no_raw_identifier",
         "tests.integration.test_pipeline_cli::test_synthetic_multi_table_source_end_to_end"),
    ),
    Control(
        "phi-demo-run", "privacy",
        "A full `make demo` run leaves no raw identifier anywhere.",
        "artifacts, reports, logs, MLflow params/tags/metrics, prediction and feedback logs, "
        "drift and audit stores",
        ("tests.demo.test_guarded_demo::test_no_raw_identifier",),
    ),
    Control(
        "phi-serving", "privacy",
        "Predictions are logged under tokens; server logs carry no identifier.",
        "prediction log, server logs",
        ("tests.integration.test_serving_stack::test_no_raw_identifier",),
    ),
    Control(
        "small-cells", "privacy",
        "Published reports hide counts of 1 to 10 and the rates computed on them, with a "
        "complement so a hidden count cannot be worked out from the total, and say so.",
        "validation report, monitoring report",
        ("tests.unit.test_small_cells",
         "tests.unit.test_monitoring_report::test_counts_below_eleven"),
    ),
    Control(
        "hmac-rotation", "privacy",
        "The tokenization key can be rotated: a crosswalk made in the ingest layer (tokens "
        "only) keeps old tokens resolvable to their source, the prediction log is rekeyed in "
        "one transaction, and outcomes join predictions made before the rotation.",
        "pipeline tokens, prediction log, outcomes, CDS fallback, lineage",
        ("tests.unit.test_key_rotation",),
    ),
    Control(
        "no-egress", "egress",
        "Nothing phones home: no connection leaves the machine during a full demo run.",
        "every Python process of the run (kfp.local components, KServe servers, MLflow, GX)",
        ("tests.demo.test_guarded_demo::test_nothing_leaves_the_machine",
         "tests.unit.test_egress_guard"),
    ),
    Control(
        "cds-jwt", "authentication",
        "The CDS Hooks service accepts only calls signed by a trusted EHR (CDS Hooks 2.0 JWT: "
        "iss, aud, exp, jti; keys from the client's JWKS); replays and expired tokens refused.",
        "CDS Hooks calls and feedback",
        ("tests.unit.test_cds_auth", "tests.unit.test_cds_service"),
    ),
    Control(
        "endpoint-tokens", "authentication",
        "With a tokens file configured, the predictor, explainer, drift detector and feedback "
        "API answer only callers with a bearer token (kept as its sha256); health probes stay "
        "open for the kubelet.",
        "every local server; the servers' own calls to each other carry their token",
        ("tests.unit.test_api_access::test_without_a_valid_token",
         "tests.integration.test_access_control::test_no_token_no_answer"),
    ),
    Control(
        "access-audit", "authentication",
        "Every access to a prediction is recorded: who, when, which service, which prediction "
        "ids; no body, header value or clinical input.",
        "predictor, explainer, detector, feedback API, CDS Hooks service",
        ("tests.unit.test_api_access",
         "tests.integration.test_access_control::test_a_client_with_a_token_is_answered"),
    ),
    Control(
        "mesh-authorization", "cluster",
        "With Istio sidecars: strict mTLS, and each workload callable only by the identities or "
        "namespaces its ALLOW policy names, never wider than its NetworkPolicies.",
        "the production overlay's workloads",
        ("tests.unit.test_manifests::test_the_mesh_names_who_may_call_each_workload",),
    ),
    Control(
        "tools-rbac", "cluster",
        "The rollout controller may get/patch only the model's InferenceServices (delete only the "
        "shadow) and applies nothing else; the pipeline runner may read only KFP's launcher "
        "config.",
        "kustomize/rbac, hospital_mlops/rollout/gitops.py",
        ("tests.unit.test_manifests::test_the_rollout_controller_may_touch_only",
         "tests.unit.test_manifests::test_the_pipeline_runner_reads_only",
         "tests.unit.test_rollout_observe::test_apply_touches_only_the_inference_services"),
    ),
    Control(
        "manifest-posture", "cluster",
        "Every container runs non-root with a read-only root filesystem, no capabilities and "
        "seccomp RuntimeDefault; no service-account token where no API access is needed.",
        "every object of every built overlay",
        ("tests.unit.test_manifests::test_every_container_is_locked_down",
         "tests.unit.test_manifests::test_no_api_access_anywhere"),
    ),
    Control(
        "network-default-deny", "cluster",
        "Default-deny NetworkPolicies with explicit allows for each path.",
        "every built overlay",
        ("tests.unit.test_manifests::test_network_is_default_deny",
         "tests.unit.test_manifests::test_no_policy_opens_a_pod_to_everyone",
         "tests.unit.test_manifests::test_every_pod_has_its_paths"),
    ),
    Control(
        "images-by-digest", "cluster",
        "The canary and production overlays, rendered by hand or by the rollout, run the "
        "serving image by digest; a tag is refused unless a dry run says so, and never with "
        "--apply.",
        "hmlops deploy render, hmlops rollout advance|rollback",
        ("tests.unit.test_deploy_render::test_a_stage_that_reaches_clinicians_runs_an_image",
         "tests.integration.test_rollout_cli::test_canary_is_refused_without_signoffs",
         "tests.integration.test_rollout_cli::test_bad_requests_change_nothing"),
    ),
    Control(
        "secrets-by-reference", "cluster",
        "Secrets are referenced, never shipped in manifests; the HMAC key reaches only the "
        "pods that tokenize.",
        "every built overlay",
        ("tests.unit.test_manifests::test_secrets_are_referenced",
         "tests.unit.test_manifests::test_the_hmac_key_reaches_only"),
    ),
    Control(
        "checkov", "cluster",
        "checkov passes on every built overlay, each skip justified on its object.",
        "every built overlay",
        ("tests.unit.test_manifests::test_checkov",),
    ),
    Control(
        "sbom", "supply chain",
        "A CycloneDX SBOM of the environment validates against the CycloneDX schema.",
        "every installed distribution",
        ("tests.unit.test_sbom",),
    ),
    Control(
        "licences", "supply chain",
        "Every dependency's licence is inventoried and non-OSI licences are flagged.",
        "every installed distribution",
        ("tests.unit.test_licenses",),
    ),
    Control(
        "model-integrity", "reliability",
        "A predictor whose model fails its sha256 or golden predictions never reports ready.",
        "predictor start-up",
        ("tests.unit.test_registry::test_a_tampered_model",
         "tests.unit.test_registry::test_a_model_that_fails_its_golden_check",
         "tests.integration.test_serving_stack::test_a_changed_model_artifact"),
    ),
    Control(
        "fallback", "reliability",
        "When the predictor is down or slow, the EHR gets the configured fallback, not an error.",
        "CDS Hooks service and predictor faults",
        ("tests.integration.test_fallback_faults",),
    ),
    Control(
        "losses-counted", "reliability",
        "A prediction log that refuses writes or a drift detector that is down costs no answer; "
        "each lost row or event is counted at once and alerted.",
        "predictor, its prediction-log writer and inference logger; the production alert rules",
        ("tests.integration.test_fallback_faults::test_a_read_only_log_and_a_dead_detector",
         "tests.unit.test_prediction_log::test_a_read_only_database",
         "tests.unit.test_manifests::test_the_serving_losses_are_alerted"),
    ),
    Control(
        "no-partial-writes", "reliability",
        "A publish killed mid-way leaves no partial snapshot visible and a rerun is identical; a "
        "registry store that fails during registration says what was written and changes no "
        "alias.",
        "snapshot publication, model registration",
        ("tests.unit.test_snapshots::test_a_publish_killed_midway",
         "tests.unit.test_registry::test_a_store_locked_during_registration"),
    ),
    Control(
        "packet-integrity", "governance",
        "This packet's files are listed with sha256; `hmlops governance verify` names any change.",
        "every file in the packet",
        ("tests.integration.test_governance_packet",),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class ControlResult:
    control: Control
    status: Status
    passed: int
    failed: int
    failures: tuple[str, ...]
    not_found: tuple[str, ...] = ()  # selectors that matched no test in the results
    skipped_tests: tuple[str, ...] = ()

    @property
    def skipped(self) -> int:
        return len(self.skipped_tests)

    @property
    def why_not_run(self) -> str:
        """What kept a control from passing when none of its tests failed."""
        parts = []
        if self.not_found:
            parts.append(f"no result for {', '.join(self.not_found)}")
        if self.skipped_tests:
            parts.append(f"skipped: {', '.join(self.skipped_tests[:5])}"
                         + (f" and {len(self.skipped_tests) - 5} more"
                            if len(self.skipped_tests) > 5 else ""))  # fmt: skip
        return "; ".join(parts)


def read_junit(path: Path) -> list[tuple[str, str, str]]:
    """(classname, name, outcome) for every test case; outcome passed/failed/skipped."""
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        cases.append((case.get("classname", ""), case.get("name", ""), outcome))
    return cases


def _matches(selector: str, classname: str, name: str) -> bool:
    module, _, prefix = selector.partition("::")
    in_module = classname == module or classname.startswith(module + ".")
    return in_module and name.startswith(prefix)


def evaluate(cases: list[tuple[str, str, str]] | None) -> list[ControlResult]:
    results = []
    for control in CONTROLS:
        mine = [
            (c, n, o)
            for c, n, o in cases or []
            if any(_matches(sel, c, n) for sel in control.tests)
        ]
        not_found = tuple(
            sel for sel in control.tests if not any(_matches(sel, c, n) for c, n, _ in mine)
        )
        failed = tuple(f"{c}::{n}" for c, n, o in mine if o == "failed")
        skipped = tuple(f"{c}::{n}" for c, n, o in mine if o == "skipped")
        passed = sum(o == "passed" for *_, o in mine)
        status: Status = (
            "failed" if failed else ("not run" if not_found or skipped or not passed else "passed")
        )
        results.append(
            ControlResult(control, status, passed, len(failed), failed, not_found, skipped)
        )
    return results
