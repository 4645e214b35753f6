"""The cluster manifests (kustomize) and the serving image, checked offline.

Each base and overlay is built with ``kubectl kustomize``; every object is validated against the
Kubernetes JSON schemas (kubernetes-validate, strict), the InferenceService against KServe
0.20's CRD schema with unknown fields refused (the API server would silently prune them), and
the Knative Trigger and Broker against our hand-written schemas. Then the design's promises are
checked one by one (locked-down containers, no RBAC, default-deny networking, the logger →
Broker → Trigger wiring, the stages), checkov scans the built output, hadolint the Dockerfile.

kubectl and checkov are tools outside the venv: missing, they skip a test locally but fail it
under CI (``CI`` set), where a skipped security scan would look green while checking nothing.
A server-side dry run against a real cluster runs only when KUBECONFIG is set.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hospital_mlops.deploy import overlay as deploy
from hospital_mlops.deploy.manifest_pods import kserve_explainer_args  # KServe's edits
from hospital_mlops.deploy.served_objects import bound_use_cases
from hospital_mlops.drift.inference_events import REQUEST_TYPE, RESPONSE_TYPE, binary_headers

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "kustomize"
BUILDS = {
    "base": KUSTOMIZE / "base",
    "production": KUSTOMIZE / "overlays" / "production",
    "canary": KUSTOMIZE / "overlays" / "canary",
    "shadow": KUSTOMIZE / "overlays" / "shadow",
    # production plus each further use case's Component (kustomize/use-cases/)
    "all-models": KUSTOMIZE / "overlays" / "all-models",
}
NAMESPACE = deploy.DEFAULT_NAMESPACE
# The oldest and the newest Kubernetes schemas the validator bundles that we claim to fit.
K8S_VERSIONS = ("1.30.0", "1.37.0")
KSERVE_CRD = ROOT / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
HAND_WRITTEN_SCHEMAS = {
    "Trigger": ROOT / "schemas" / "knative" / "trigger.v1.schema.json",
    "Broker": ROOT / "schemas" / "knative" / "broker.v1.schema.json",
    # hand-written likewise (schemas/prometheus-operator/README.md)
    "PrometheusRule": ROOT / "schemas" / "prometheus-operator" / "prometheusrule.v1.schema.json",
    # and Istio's security API (schemas/istio/README.md)
    "AuthorizationPolicy": ROOT / "schemas" / "istio" / "authorizationpolicy.v1.schema.json",
    "PeerAuthentication": ROOT / "schemas" / "istio" / "peerauthentication.v1.schema.json",
}
CUSTOM_KINDS = {"InferenceService", *HAND_WRITTEN_SCHEMAS}
# Every Secret the manifests may reference, with its keys: anything else is a typo or a leak.
SECRETS = {
    "hmlops-registry": {"MLFLOW_TRACKING_URI"},
    "hmlops-hmac-key": {"HMLOPS_HMAC_KEY", "HMLOPS_HMAC_PREVIOUS_KEY"},
    "hmlops-prediction-log": {"HMLOPS_PREDICTION_LOG_URL"},
    "hmlops-shadow-prediction-log": {"HMLOPS_PREDICTION_LOG_URL"},
    "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL"},
}
SECRET_ENV = {key for keys in SECRETS.values() for key in keys}
OPTIONAL_SECRET_ENV = {"HMLOPS_HMAC_PREVIOUS_KEY"}
# checkov findings we accept, each justified in a checkov.io/skip annotation on the object.
ALLOWED_SKIPS = {"CKV_K8S_29", "CKV_K8S_35", "CKV_K8S_43"}
SHADOW_TYPE = "org.hospital-mlops.shadow.response"
CLIENT_ONLY = "{}"  # the logger's metadata attribute for a request without the explainer's header
# The second use case, a Component (kustomize/use-cases/post-acute) the production overlay
# includes; a Component only means something inside an overlay, so it has no entry in BUILDS.
POST_ACUTE = "post-acute"  # its served name: the InferenceService's name
POST_ACUTE_USE_CASE = "post_acute_at_admission"
POST_ACUTE_MODEL = "post-acute-at-admission"
POST_ACUTE_DETECTOR = f"{POST_ACUTE}-drift-detector"
# each served model's registry name and drift detector, in the builds that include it
MODELS = {deploy.SERVICE: "readmission-30d", POST_ACUTE: POST_ACUTE_MODEL}
DETECTORS = {deploy.SERVICE: deploy.DETECTOR, POST_ACUTE: POST_ACUTE_DETECTOR}
# what the component appends to the CDS service's arguments
POST_ACUTE_BINDING = [
    "--use-case-predictor",
    f"{POST_ACUTE_USE_CASE}=http://{deploy.predictor_host(POST_ACUTE, NAMESPACE)}",
]
# libyaml's loader: the KServe CRD is 2 MB, about 9 s of pure-Python parsing against 1.3 s.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ----------------------------------------------------------------------------- tools and builds


def require_tool(name: str, path: str | None, install_hint: str) -> str:
    if path:
        return path
    message = f"{name} not found ({install_hint})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run this check, not skip it")
    pytest.skip(message)


def kubectl() -> str:
    return require_tool(
        "kubectl", shutil.which("kubectl"), "kubectl with built-in kustomize, on PATH"
    )


def checkov() -> str:
    local = ROOT / ".venv-tools" / "bin" / "checkov"
    found = str(local) if local.exists() else shutil.which("checkov")
    return require_tool(
        "checkov", found, "`make test` builds .venv-tools from requirements-tools.lock"
    )


def build(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.load_all(proc.stdout, Loader=FAST_LOADER) if doc]


@cache
def _built(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(build(BUILDS[name]))


def built(name: str) -> list[dict[str, Any]]:
    """A fresh copy of a build (cached: each overlay is built once per session)."""
    return copy.deepcopy(list(_built(name)))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


# ----------------------------------------------------------------------- what KServe will create


def component_pods(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods KServe makes of an InferenceService's components, as far as policy cares: its
    labels plus KServe's own, the annotations (checkov skips), and the pod spec."""
    pods = []
    meta = isvc["metadata"]
    for component in ("predictor", "explainer"):
        spec = isvc["spec"].get(component)
        if not spec:
            continue
        labels = {
            **meta.get("labels", {}),
            **spec.get("labels", {}),
            "serving.kserve.io/inferenceservice": meta["name"],
            "component": component,
        }
        keep = ("containers", "volumes", "serviceAccountName", "automountServiceAccountToken")
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{meta['name']}-{component}",
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": dict(meta.get("annotations", {})),
                },
                "spec": {k: v for k, v in spec.items() if k in keep},
            }
        )
    return pods


def workload_pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod the build leads to: Deployment templates and InferenceService components."""
    pods = []
    for dep in of_kind(docs, "Deployment"):
        template = dep["spec"]["template"]
        pods.append(
            {
                "kind": "Pod",
                "metadata": {
                    "name": dep["metadata"]["name"],
                    "namespace": dep["metadata"]["namespace"],
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            }
        )
    for isvc in of_kind(docs, "InferenceService"):
        pods.extend(component_pods(isvc))
    return pods


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# ----------------------------------------------------------------------------------- validation


def _closed(schema: Any) -> Any:
    """A CRD schema with unknown fields refused: the API server prunes them silently, so a
    misspelt field would otherwise validate and then vanish on apply."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def _custom_validators() -> dict[str, jsonschema.Draft7Validator]:
    crd = yaml.load(KSERVE_CRD.read_text(), Loader=FAST_LOADER)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    validators = {
        "InferenceService": jsonschema.Draft7Validator(
            _closed(version["schema"]["openAPIV3Schema"])
        )
    }
    for kind, path in HAND_WRITTEN_SCHEMAS.items():
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema problem of one object, as 'path: message' strings (empty when valid)."""
    kind = doc["kind"]
    if kind in CUSTOM_KINDS:
        found = _custom_validators()[kind].iter_errors(doc)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"k8s {version} {'/'.join(map(str, exc.path))}: {exc.message}")
    return errors


def validate_all(docs: list[dict[str, Any]]) -> None:
    problems = {f"{d['kind']}/{d['metadata']['name']}": schema_errors(d) for d in docs}
    problems = {name: errors for name, errors in problems.items() if errors}
    assert not problems, json.dumps(problems, indent=2)


# ======================================================================================== tests


@pytest.mark.parametrize("name", list(BUILDS))
def test_every_kustomization_builds_into_its_namespace(name: str) -> None:
    docs = built(name)
    assert docs
    for doc in docs:
        expected = (
            doc["metadata"]["name"]
            if doc["kind"] == "Namespace"
            else doc["metadata"].get("namespace")
        )
        assert expected == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("name", list(BUILDS))
def test_every_object_validates_against_its_schema(name: str) -> None:
    validate_all(built(name))


def test_schemas_refuse_what_the_cluster_would_refuse_or_drop() -> None:
    """The validators bite: a misspelt field, a bad enum, a bad name, a wrong type."""
    docs = built("production")
    isvc = one(docs, "InferenceService", deploy.SERVICE)
    trigger = one(docs, "Trigger", "readmission-drift-requests")
    broker = one(docs, "Broker", deploy.BROKER)
    policy = one(docs, "NetworkPolicy", "detector-ingress")
    deployment = one(docs, "Deployment", deploy.DETECTOR)

    bad = []
    b = copy.deepcopy(isvc)
    b["spec"]["predictor"]["canaryTrafficPercentage"] = 10  # pruned silently by the server
    bad.append(b)
    b = copy.deepcopy(isvc)
    b["spec"]["predictor"]["logger"]["mode"] = "everything"
    bad.append(b)
    b = copy.deepcopy(trigger)
    b["spec"]["subscribers"] = b["spec"].pop("subscriber")
    bad.append(b)
    b = copy.deepcopy(trigger)
    b["spec"]["filter"]["attributes"]["InferenceServiceName"] = "readmission"
    bad.append(b)
    b = copy.deepcopy(broker)
    b["spec"]["delivery"]["backoffPolicy"] = "exponentail"
    bad.append(b)
    b = copy.deepcopy(broker)
    b["spec"]["delivery"]["backoffDelay"] = "200ms"
    bad.append(b)
    b = copy.deepcopy(policy)
    b["spec"]["ingress"][0]["form"] = b["spec"]["ingress"][0].pop("from")
    bad.append(b)
    b = copy.deepcopy(deployment)
    b["spec"]["replicas"] = "one"
    bad.append(b)
    for doc in bad:
        assert schema_errors(doc), f"{doc['kind']}/{doc['metadata']['name']} passed when broken"


@pytest.mark.parametrize("name", list(BUILDS))
def test_only_kinds_we_can_validate(name: str) -> None:
    standard = {"Namespace", "ServiceAccount", "Service", "Deployment", "NetworkPolicy"}
    standard.add("PodDisruptionBudget")
    kinds = {d["kind"] for d in built(name)}
    assert kinds <= standard | CUSTOM_KINDS, kinds - standard - CUSTOM_KINDS


# ------------------------------------------------------------------------------------- security


@pytest.mark.parametrize("name", list(BUILDS))
def test_every_container_is_locked_down(name: str) -> None:
    pods = workload_pods(built(name))
    assert pods
    for pod in pods:
        spec = pod["spec"]
        pod_sc = spec.get("securityContext", {})
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"]:
            where = f"{pod['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot"), where
            assert (sc.get("runAsUser") or pod_sc.get("runAsUser", 0)) >= 10000, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{where}: /tmp must be an emptyDir"
            for resource in ("requests", "limits"):
                assert set(c["resources"][resource]) >= {"cpu", "memory"}, where
            assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", where
            assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", where
            assert c["image"].startswith(f"{deploy.BASE_IMAGE}:"), where


@pytest.mark.parametrize("name", list(BUILDS))
def test_no_api_access_anywhere(name: str) -> None:
    """No Role or binding ships, no account mounts a token, no pod uses the default account:
    the pods never call the Kubernetes API, and secretKeyRef env vars need no RBAC."""
    docs = built(name)
    rbac = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    assert not [d for d in docs if d["kind"] in rbac]
    for account in of_kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
    for pod in workload_pods(docs):
        assert pod["spec"]["automountServiceAccountToken"] is False, pod["metadata"]["name"]
        assert pod["spec"]["serviceAccountName"] not in ("", "default"), pod["metadata"]["name"]
    if name != "shadow":  # the add-on uses the accounts of the deployment it joins
        names = {a["metadata"]["name"] for a in of_kind(docs, "ServiceAccount")}
        assert {p["spec"]["serviceAccountName"] for p in workload_pods(docs)} <= names


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("name", list(BUILDS))
def test_secrets_are_referenced_never_shipped(name: str) -> None:
    docs = built(name)
    assert not of_kind(docs, "Secret")
    for pod in workload_pods(docs):
        for c in pod["spec"]["containers"]:
            for env_name, env in _env(c).items():
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if env_name in SECRET_ENV:
                    assert ref, f"{pod['metadata']['name']}: {env_name} must come from a Secret"
                if ref:
                    assert ref["key"] in SECRETS.get(ref["name"], set()), ref
                    # a missing Secret must block the pod, except a rotation's retired key
                    optional = env_name in OPTIONAL_SECRET_ENV
                    assert bool(ref.get("optional")) == optional, env_name


@pytest.mark.parametrize("name", list(BUILDS))
def test_the_access_audit_goes_to_the_log_stream(name: str) -> None:
    """Root filesystems are read-only: every server writes its access audit to stdout, where
    the cluster's log pipeline keeps it (a file default would stop the server at start)."""
    servers = [
        (pod["metadata"]["name"], c)
        for pod in workload_pods(built(name))
        for c in pod["spec"]["containers"]
        if "serve-one" in c.get("args", []) or "cds" in c.get("args", [])
    ]
    assert len(servers) >= (1 if name == "shadow" else 4)  # predictor, explainer, detector, cds
    for pod_name, c in servers:
        assert _env(c).get("HMLOPS_ACCESS_LOG", {}).get("value") == "-", (pod_name, c["name"])


def test_the_hmac_key_reaches_only_the_predictors_and_the_cds_service() -> None:
    """Least privilege for the tokenization key: the explainer and the detector never get it;
    the CDS service does, to tokenize the EHR's encounter id before the predictor sees it."""
    docs = built("all-models") + built("shadow")
    for pod in workload_pods(docs):
        containers = pod["spec"]["containers"]
        has_key = any("HMLOPS_HMAC_KEY" in _env(c) for c in containers)
        labels = pod["metadata"]["labels"]
        needs = labels.get("component") == "predictor" or pod["metadata"]["name"] == deploy.CDS
        assert has_key == needs, pod["metadata"]["name"]
        # a retired key, during a rotation, only where earlier tokens are looked up; optional,
        # so the pod starts with or without it
        previous = [
            e
            for c in containers
            for e in c.get("env", [])
            if e["name"] == "HMLOPS_HMAC_PREVIOUS_KEY"
        ]
        if pod["metadata"]["name"] == deploy.CDS:
            assert [e["valueFrom"]["secretKeyRef"]["optional"] for e in previous] == [True]
        else:
            assert not previous, pod["metadata"]["name"]


def test_example_secrets_are_fake_complete_and_outside_every_build() -> None:
    examples = ROOT / "manifests" / "examples"
    for kustomization in (ROOT / "kustomize").rglob("kustomization.yaml"):
        body = yaml.safe_load(kustomization.read_text())  # comments may mention the examples
        assert "examples" not in json.dumps(body), kustomization
    shipped = {d["metadata"]["name"] for n in BUILDS for d in built(n)}
    secrets = list(yaml.safe_load_all((examples / "secrets.example.yaml").read_text()))
    assert {s["metadata"]["name"]: set(s["stringData"]) for s in secrets} == SECRETS
    for secret in secrets:
        assert secret["metadata"]["name"] not in shipped
        for key, value in secret["stringData"].items():
            if key != "MLFLOW_TRACKING_URI":  # an in-cluster address without credentials
                assert "EXAMPLE-NOT-A" in value, key


# ------------------------------------------------------------------------------------- networking


def _policies(docs: list[dict[str, Any]], pod: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    labels = pod["metadata"]["labels"]
    return [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if kind in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], labels)
    ]


def test_network_is_default_deny_with_dns_only_to_kube_dns() -> None:
    docs = built("production")
    deny = one(docs, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = one(docs, "NetworkPolicy", "allow-dns-egress")["spec"]
    assert dns["podSelector"] == {} and "ingress" not in dns
    (rule,) = dns["egress"]
    assert {p["port"] for p in rule["ports"]} == {53}
    (peer,) = rule["to"]
    assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_no_policy_opens_a_pod_to_everyone() -> None:
    """An empty peer, an empty namespaceSelector or a rule without ports allows far more than
    the path it was written for."""
    for name in BUILDS:
        for policy in of_kind(built(name), "NetworkPolicy"):
            spec = policy["spec"]
            for direction, peers_key in (("ingress", "from"), ("egress", "to")):
                for rule in spec.get(direction, []):
                    where = f"{policy['metadata']['name']} {direction}"
                    assert rule.get(peers_key), f"{where}: no peers means any peer"
                    assert rule.get("ports"), f"{where}: no ports means every port"
                    for peer in rule[peers_key]:
                        assert peer and peer.get("namespaceSelector") != {}, where
                        assert "ipBlock" not in peer, where


@pytest.mark.parametrize("name", ["production", "canary", "all-models"])
def test_every_pod_has_its_paths_and_only_those(name: str) -> None:
    docs = built(name)
    pods = {p["metadata"]["name"]: p for p in workload_pods(docs)}
    readmission = {"readmission-predictor", "readmission-explainer", deploy.DETECTOR, deploy.CDS}
    post_acute = {f"{POST_ACUTE}-predictor", f"{POST_ACUTE}-explainer", POST_ACUTE_DETECTOR}
    assert set(pods) == (readmission | post_acute if name == "all-models" else readmission)
    for pod in pods.values():
        ingress = [p["metadata"]["name"] for p in _policies(docs, pod, "Ingress")]
        egress = [p["metadata"]["name"] for p in _policies(docs, pod, "Egress")]
        assert "default-deny-all" in ingress and "allow-dns-egress" in egress
        assert len(ingress) >= 2 and len(egress) >= 2, (pod["metadata"]["name"], ingress, egress)

    def peers(pod: str, direction: str) -> list[tuple[str, str, int]]:
        """(namespace or 'same', pod selector as text, port) for every allowed peer."""
        out = []
        kind = direction.capitalize()
        for policy in _policies(docs, pods[pod], kind):
            for rule in policy["spec"].get(direction, []):
                for peer in rule["from" if direction == "ingress" else "to"]:
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    where = ns.get("kubernetes.io/metadata.name", "same")
                    selector = json.dumps(peer.get("podSelector", {}), sort_keys=True)
                    out += [(where, selector, p["port"]) for p in rule["ports"]]
        return out

    detector_in = {(ns, port) for ns, _, port in peers(deploy.DETECTOR, "ingress")}
    assert detector_in == {("knative-eventing", 8080), ("monitoring", 8080)}
    predictor_out = peers("readmission-predictor", "egress")
    broker_ingress = json.dumps(
        {"matchLabels": {"eventing.knative.dev/brokerRole": "ingress"}}, sort_keys=True
    )
    assert ("knative-eventing", broker_ingress, 8080) in predictor_out
    assert {ns for ns, _, _ in predictor_out} == {"kube-system", "knative-eventing", "mlflow"} | {
        "hospital-mlops-db"
    }
    predictor_in = {ns for ns, _, _ in peers("readmission-predictor", "ingress")}
    assert predictor_in == {"istio-system", "knative-serving", "same"}
    explainer_out = {ns for ns, _, _ in peers("readmission-explainer", "egress")}
    assert "hospital-mlops-db" not in explainer_out and "knative-eventing" not in explainer_out
    # the EHR reaches the CDS service only through the ingress gateway; it reaches out to the
    # predictor, the registry, the feedback store and (via the egress gateway) the FHIR server
    gateway = json.dumps({"matchLabels": {"istio": "ingressgateway"}}, sort_keys=True)
    assert peers(deploy.CDS, "ingress") == [("istio-system", gateway, 8080)]
    cds_out = {(ns, port) for ns, _, port in peers(deploy.CDS, "egress")}
    assert cds_out >= {("mlflow", 5000), ("hospital-mlops-db", 5432), ("istio-system", 8443)}
    assert {ns for ns, _ in cds_out} == {
        "kube-system", "istio-system", "knative-serving", "same", "mlflow", "hospital-mlops-db"
    }  # fmt: skip
    # with the mesh, each explainer calls predictors under its own identity
    callers = one(docs, "AuthorizationPolicy", "predictor-callers")["spec"]["rules"][0]
    principals = callers["from"][0]["source"]["principals"]
    accounts = ["readmission-explainer", "cds-hooks"]
    accounts += [f"{POST_ACUTE}-explainer"] if name == "all-models" else []
    for account in accounts:
        assert f"cluster.local/ns/{NAMESPACE}/sa/{account}" in principals
    if name != "all-models":
        return
    # the second model's pods get exactly the paths of their readmission counterparts
    for mine, theirs in (
        (f"{POST_ACUTE}-predictor", "readmission-predictor"),
        (f"{POST_ACUTE}-explainer", "readmission-explainer"),
        (POST_ACUTE_DETECTOR, deploy.DETECTOR),
    ):
        for direction in ("ingress", "egress"):
            assert sorted(peers(mine, direction)) == sorted(peers(theirs, direction)), (
                mine, direction
            )  # fmt: skip


# ------------------------------------------------------------------------------- wiring: events


def test_the_champion_logs_to_the_broker_and_triggers_feed_the_detector() -> None:
    """For each served model: its logger posts to the one Broker, and two Triggers filtered on
    its InferenceService's name feed its own detector."""
    docs = built("all-models")
    assert {i["metadata"]["name"] for i in of_kind(docs, "InferenceService")} == set(DETECTORS)
    broker = one(docs, "Broker", deploy.BROKER)
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == (
        "MTChannelBasedBroker"  # the class whose ingress the logger URL names
    )
    for isvc_name, detector_name in DETECTORS.items():
        isvc = one(docs, "InferenceService", isvc_name)
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
        logger = isvc["spec"]["predictor"]["logger"]
        assert logger["mode"] == "all" and logger["url"] == deploy.logger_url(NAMESPACE)
        service = one(docs, "Service", detector_name)
        detector = one(docs, "Deployment", detector_name)
        assert matches(
            {"matchLabels": service["spec"]["selector"]},
            detector["spec"]["template"]["metadata"]["labels"],
        )
        (port,) = service["spec"]["ports"]
        container_ports = {
            p["name"] for p in detector["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert port["targetPort"] in container_ports

    delivered: dict[str, set[str]] = {}
    for trigger in of_kind(docs, "Trigger"):
        spec = trigger["spec"]
        assert spec["broker"] == deploy.BROKER
        attributes = spec["filter"]["attributes"]
        isvc_name = attributes["inferenceservicename"]
        assert spec["subscriber"]["ref"] == {
            "apiVersion": "v1",
            "kind": "Service",
            "name": DETECTORS[isvc_name],
        }
        assert attributes["metadata"] == CLIENT_ONLY
        delivered.setdefault(isvc_name, set()).add(attributes["type"])
    assert delivered == {name: {REQUEST_TYPE, RESPONSE_TYPE} for name in DETECTORS}


def _go_canonical(header: str) -> str:
    """net/http's CanonicalMIMEHeaderKey, which the KServe agent's header names are compared in."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in header.split("-"))


def test_the_explainers_calls_never_reach_drift_or_shadow() -> None:
    """KernelSHAP sends the predictor synthetic coalitions. The explainer marks its calls with a
    header; the logger copies that header into each event's ``metadata`` attribute (a JSON map,
    "{}" when absent), and every Trigger on the champion's events takes only "{}"."""
    from serving.predictor_client import CALLER_HEADER

    for isvc in of_kind(built("all-models"), "InferenceService"):
        headers = isvc["spec"]["predictor"]["logger"]["metadataHeaders"]
        assert headers == [_go_canonical(CALLER_HEADER)], isvc["metadata"]["name"]
    assert json.dumps({}) == CLIENT_ONLY  # what Go's json.Marshal gives for an empty map too
    for name in BUILDS:
        for trigger in of_kind(built(name), "Trigger"):
            attributes = trigger["spec"]["filter"]["attributes"]
            if attributes["inferenceservicename"] in DETECTORS:
                assert attributes["metadata"] == CLIENT_ONLY, trigger["metadata"]["name"]


def test_the_explainer_reaches_its_own_predictor_with_one_host_argument() -> None:
    for name in ("base", "production", "canary"):
        for isvc in of_kind(built(name), "InferenceService"):
            args = kserve_explainer_args(isvc)
            hosts = [i for i, a in enumerate(args) if a.startswith("--predictor")]
            assert len(hosts) == 1, f"{name}: KServe would add a second predictor host: {args}"
            own = deploy.predictor_host(isvc["metadata"]["name"], NAMESPACE)
            assert args[hosts[0] + 1] == own, name


def _model_args(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    out = {}
    for pod in workload_pods(docs):
        out[pod["metadata"]["name"]] = pod["spec"]["containers"][0]["args"]
    return out


@pytest.mark.parametrize(
    ("name", "ref"),
    [("production", "champion"), ("canary", "challenger"), ("all-models", "champion")],
)
def test_commands_are_the_ones_the_renderer_writes(name: str, ref: str) -> None:
    """The static overlays and hmlops deploy render agree on every command line."""
    model_ref = f"readmission-30d@{ref}"
    args = _model_args(built(name))
    assert args["readmission-predictor"] == deploy.predictor_args(model_ref)
    host = deploy.predictor_host(deploy.SERVICE, NAMESPACE)
    assert args["readmission-explainer"] == deploy.explainer_args(model_ref, host)
    assert args[deploy.DETECTOR] == deploy.detector_args("readmission-30d@champion")
    callers = one(built(name), "AuthorizationPolicy", deploy.PREDICTOR_CALLERS)
    principals = callers["spec"]["rules"][0]["from"][0]["source"]["principals"]
    if name != "all-models":
        assert args[deploy.CDS] == deploy.cds_args(NAMESPACE)
        assert principals == deploy.predictor_callers(NAMESPACE)
    else:
        # the component appends the post-acute binding, as the renderer's cds_args() writes it
        # for every bound use case
        bound = bound_use_cases(KUSTOMIZE)
        assert [b.use_case for b in bound] == [POST_ACUTE_USE_CASE]
        assert args[deploy.CDS] == deploy.cds_args(NAMESPACE) + POST_ACUTE_BINDING
        assert args[deploy.CDS] == deploy.cds_args(NAMESPACE, bound)
        assert principals == deploy.predictor_callers(NAMESPACE, bound)
        post_acute = f"{POST_ACUTE_MODEL}@champion"
        assert args[f"{POST_ACUTE}-predictor"] == deploy.predictor_args(post_acute)
        post_acute_host = deploy.predictor_host(POST_ACUTE, NAMESPACE)
        explainer = deploy.explainer_args(post_acute, post_acute_host)
        assert args[f"{POST_ACUTE}-explainer"] == explainer
        assert args[POST_ACUTE_DETECTOR] == deploy.detector_args(post_acute)
    for pod in workload_pods(built(name)):
        assert pod["spec"]["containers"][0]["command"] == ["hmlops"]


def test_the_cli_accepts_the_explainer_command_as_kserve_runs_it() -> None:
    from hospital_mlops.cli.main import build_parser

    isvc = one(built("production"), "InferenceService", deploy.SERVICE)
    args = build_parser().parse_args(kserve_explainer_args(isvc))
    assert args.predictor_host == deploy.predictor_host(deploy.SERVICE, NAMESPACE)
    assert args.port == deploy.PORT


def test_the_cli_accepts_the_cds_command_the_manifest_runs() -> None:
    from hospital_mlops.cli.main import build_parser

    cds = one(built("production"), "Deployment", deploy.CDS)["spec"]["template"]["spec"]
    args = build_parser().parse_args(cds["containers"][0]["args"])
    assert (args.command, args.action, args.port, args.bind) == ("cds", "serve", 8080, "0.0.0.0")
    assert args.predictor_url == f"http://{deploy.predictor_host(deploy.SERVICE, NAMESPACE)}"
    assert not args.insecure_no_auth  # client JWTs are verified on the cluster
    # the trusted EHRs' public keys: a ConfigMap the site creates, mounted read-only
    container = cds["containers"][0]
    path = _env(container)["HMLOPS_CDS_TRUSTED_CLIENTS"]["value"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in cds["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "hmlops-cds-trusted-clients"


# ----------------------------------------------------------------------------------------- stages


def test_canary_is_a_revision_of_the_production_service() -> None:
    production = one(built("production"), "InferenceService", deploy.SERVICE)
    canary = one(built("canary"), "InferenceService", deploy.SERVICE)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary["spec"]["explainer"]["canaryTrafficPercent"] == 10
    # canaryTrafficPercent exists only in Knative mode
    assert canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    for name in ("base", "production", "shadow"):
        for isvc in of_kind(built(name), "InferenceService"):
            assert "canaryTrafficPercent" not in isvc["spec"]["predictor"], name
    # Promotion (canary → production, same version) must not mint a revision: KServe copies the
    # InferenceService's labels and annotations into the pod template.
    assert canary["metadata"]["labels"] == production["metadata"]["labels"]
    assert canary["metadata"]["annotations"] == production["metadata"]["annotations"]
    for isvc in (production, canary):
        assert not any(k.startswith("hospital-mlops/stage") for k in isvc["metadata"]["labels"])


def test_the_stage_is_labelled_on_everything_else() -> None:
    for name in ("production", "canary", "shadow"):
        for doc in built(name):
            if doc["kind"] != "InferenceService":
                assert doc["metadata"]["labels"]["hospital-mlops/stage"] == name, doc["kind"]


def test_every_model_keeps_two_predictors_and_drains_them_one_at_a_time() -> None:
    """Per served model: two predictors at least, and a budget of its own over them."""
    docs = built("all-models")
    assert len(of_kind(docs, "PodDisruptionBudget")) == len(DETECTORS)
    for isvc_name, detector_name in DETECTORS.items():
        predictor = one(docs, "InferenceService", isvc_name)["spec"]["predictor"]
        assert predictor["minReplicas"] >= 2, isvc_name
        assert predictor["maxReplicas"] > predictor["minReplicas"], isvc_name
        pdb = one(docs, "PodDisruptionBudget", f"{isvc_name}-predictor")
        assert pdb["spec"]["maxUnavailable"] == 1 < predictor["minReplicas"]
        selected = [
            p
            for p in workload_pods(docs)
            if matches(pdb["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert [p["metadata"]["name"] for p in selected] == [f"{isvc_name}-predictor"]
        assert one(docs, "Deployment", detector_name)["spec"]["replicas"] == 1
    assert not of_kind(docs, "HorizontalPodAutoscaler")  # Knative's autoscaler owns scaling


def test_shadow_is_an_add_on_that_answers_no_one() -> None:
    docs = built("shadow")
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "Trigger"]
    shadow = one(docs, "InferenceService", deploy.SHADOW_SERVICE)
    spec = shadow["spec"]
    assert "explainer" not in spec, "nobody asks the shadow for explanations"
    assert "logger" not in spec["predictor"], "its events would loop back into the Broker"
    assert shadow["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    env = _env(spec["predictor"]["containers"][0])
    assert env["CE_TYPE"]["value"] == SHADOW_TYPE
    log_secret = env["HMLOPS_PREDICTION_LOG_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert log_secret == "hmlops-shadow-prediction-log"

    (trigger,) = of_kind(docs, "Trigger")
    attributes = trigger["spec"]["filter"]["attributes"]
    assert attributes == {
        "type": REQUEST_TYPE,
        "inferenceservicename": deploy.SERVICE,
        "metadata": CLIENT_ONLY,
    }
    assert trigger["spec"]["subscriber"] == {
        "ref": {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": f"{deploy.SHADOW_SERVICE}-predictor",  # the Knative Service KServe creates
        },
        "uri": "/v1/models/readmission:predict",
    }
    assert trigger["spec"]["delivery"]["retry"] == 0
    # No Trigger anywhere subscribes to the shadow's replies, so the Broker drops them.
    for name in BUILDS:
        for t in of_kind(built(name), "Trigger"):
            assert t["spec"]["filter"]["attributes"]["type"] != SHADOW_TYPE
            assert (
                t["spec"]["filter"]["attributes"]["inferenceservicename"] != deploy.SHADOW_SERVICE
            )


def test_kserve_hands_the_shadow_the_champions_v1_body_and_tags_its_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the shadow design leans on, in KServe 0.20 itself: a binary-mode CloudEvent (what the
    Trigger delivers) decodes to the champion's v1 body, and the reply carries CE_TYPE."""
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane

    body = {"instances": [{"age": "[70-80)", "prior_encounters": 2}]}
    headers = binary_headers("evt-1", "request", deploy.SERVICE, namespace=NAMESPACE)
    headers["ce-knativearrivaltime"] = "2026-01-01T00:00:00Z"  # the Broker adds attributes
    plane = DataPlane(ModelRepository())
    decoded, attributes = plane.decode(json.dumps(body).encode(), headers)
    assert decoded == body
    assert attributes["id"] == "evt-1"  # the champion's request id, to pair the two answers

    shadow = one(built("shadow"), "InferenceService", deploy.SHADOW_SERVICE)
    for name, env in _env(shadow["spec"]["predictor"]["containers"][0]).items():
        if name.startswith("CE_"):
            monkeypatch.setenv(name, env["value"])
    _, reply_headers = plane.encode("readmission", {"predictions": []}, headers, attributes)
    assert reply_headers["ce-type"] == SHADOW_TYPE


# ------------------------------------------------------------------------ the second use case


def _without(spec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in keys}


def test_all_models_serves_both_from_one_image() -> None:
    """One predictor image, many models: each InferenceService runs the same image, command and
    pod spec, its registered model chosen by --model alone. The two pod specs are copies (a
    Component cannot reuse the base's object), kept in step here."""
    from hospital_mlops.use_case import load_use_case

    docs = built("all-models")
    services = {i["metadata"]["name"]: i for i in of_kind(docs, "InferenceService")}
    assert set(services) == {deploy.SERVICE, POST_ACUTE}
    case = load_use_case(use_case=POST_ACUTE_USE_CASE)
    assert (case.served_as, case.model_name) == (POST_ACUTE, POST_ACUTE_MODEL)
    images = set()
    for name, isvc in services.items():
        ref = f"{MODELS[name]}@champion"
        predictor = isvc["spec"]["predictor"]["containers"][0]
        assert predictor["args"] == deploy.predictor_args(ref), name
        assert predictor["command"] == ["hmlops"]
        images |= {c["image"] for part in ("predictor", "explainer") for c in
                   isvc["spec"][part]["containers"]}  # fmt: skip
    assert images == {f"{deploy.BASE_IMAGE}:0.1.0"}
    readmission, post_acute = services[deploy.SERVICE], services[POST_ACUTE]
    assert post_acute["metadata"]["annotations"] == readmission["metadata"]["annotations"]
    for part in ("predictor", "explainer"):
        mine, theirs = post_acute["spec"][part], readmission["spec"][part]
        assert mine["serviceAccountName"] == f"{POST_ACUTE}-{part}"
        one(docs, "ServiceAccount", mine["serviceAccountName"])
        assert _without(mine, "serviceAccountName", "containers") == _without(
            theirs, "serviceAccountName", "containers"
        ), part
        assert _without(mine["containers"][0], "args") == _without(
            theirs["containers"][0], "args"
        ), part


def test_the_cds_service_binds_the_post_acute_predictor() -> None:
    """One CDS Deployment serves every use case's hooks; without the binding the admission
    service (encounter-start) is simply not offered."""
    from hospital_mlops.cli.main import build_parser

    url = f"http://{deploy.predictor_host(POST_ACUTE, NAMESPACE)}"
    for name, bound in (("all-models", [f"{POST_ACUTE_USE_CASE}={url}"]), ("production", [])):
        cds = one(built(name), "Deployment", deploy.CDS)["spec"]["template"]["spec"]
        args = build_parser().parse_args(cds["containers"][0]["args"])
        assert args.predictor_url == f"http://{deploy.predictor_host(deploy.SERVICE, NAMESPACE)}"
        assert args.use_case_predictor == bound, name
    assert deploy.CDS not in {d["metadata"]["name"] for d in built("shadow")}


def test_the_post_acute_detector_takes_only_post_acute_events() -> None:
    docs = built("all-models")
    feeding = [
        t["spec"]["filter"]["attributes"]
        for t in of_kind(docs, "Trigger")
        if t["spec"]["subscriber"]["ref"]["name"] == POST_ACUTE_DETECTOR
    ]
    assert sorted(feeding, key=lambda a: a["type"]) == [
        {"type": kind, "inferenceservicename": POST_ACUTE, "metadata": CLIENT_ONLY}
        for kind in sorted((REQUEST_TYPE, RESPONSE_TYPE))
    ]
    # Both detectors carry app.kubernetes.io/name drift-detector (the policies' selector): each
    # Service must still reach its own model's detector only.
    pods = workload_pods(docs)
    for detector_name in DETECTORS.values():
        selector = {"matchLabels": one(docs, "Service", detector_name)["spec"]["selector"]}
        selected = [
            p["metadata"]["name"] for p in pods if matches(selector, p["metadata"]["labels"])
        ]
        assert selected == [detector_name]


def test_rollout_stages_are_per_model() -> None:
    """The shadow, canary and production overlays are the readmission model's rollout stages:
    no post-acute object in them. all-models is production plus the component, which changes
    no readmission object but the CDS service's binding and the mesh's caller list."""
    for name in ("production", "canary", "shadow"):
        model_refs = {
            arg
            for pod in workload_pods(built(name))
            for arg in pod["spec"]["containers"][0]["args"]
            if arg.startswith(f"{POST_ACUTE_MODEL}@")
        }
        assert model_refs == set(), name
    production = {(d["kind"], d["metadata"]["name"]): d for d in built("production")}
    combined = {(d["kind"], d["metadata"]["name"]): d for d in built("all-models")}
    assert set(production) < set(combined)
    changed = {key for key in production if production[key] != combined[key]}
    assert changed == {("Deployment", deploy.CDS), ("AuthorizationPolicy", "predictor-callers")}


def test_each_served_model_has_its_monitoring_run() -> None:
    """One monitoring run per served model, every file in manifests/kfp valid as the scheduler
    reads it."""
    from pipelines.monitoring_runner import load_recurring_run, recurring_run_path

    paths = sorted((ROOT / "manifests" / "kfp").glob("*.yaml"))
    assert recurring_run_path() in paths
    runs = {path.name: load_recurring_run(path) for path in paths}
    assert len({run.name for run in runs.values()}) == len(runs)
    for run in runs.values():
        assert (ROOT / run.pipeline_package).is_file(), run.name
    monitoring = [
        r for r in runs.values() if r.pipeline_package.endswith("monitoring_pipeline.yaml")
    ]
    assert sorted(run.parameters["model"] for run in monitoring) == sorted(MODELS.values())
    # and the post-acute model's daily worklist, through the batch-scoring pipeline
    worklist = runs["post-acute-worklist-recurring-run.yaml"]
    assert worklist.pipeline_package == "pipelines/compiled/batch_pipeline.yaml"
    assert worklist.parameters["model"] == POST_ACUTE_MODEL
    post_acute = runs["post-acute-monitoring-recurring-run.yaml"]
    assert (post_acute.parameters["model"], post_acute.parameters["ref"]) == (
        POST_ACUTE_MODEL, "champion"
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- checkov


def _scan_dir(tmp: Path, builds: dict[str, list[dict[str, Any]]]) -> Path:
    """One file per build, each with the pods KServe would make of its InferenceServices, so
    checkov's pod checks and its NetworkPolicy graph check see those pods too."""
    for name, docs in builds.items():
        pods = [p for isvc in of_kind(docs, "InferenceService") for p in component_pods(isvc)]
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump_all(docs + pods, sort_keys=False))
    return tmp


def run_checkov(directory: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            checkov(),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    return report if isinstance(report, dict) else {"results": {}, "summary": {}}


PINNED_IMAGE = "registry.hospital.example/hospital-mlops/serving@sha256:" + "ab" * 32


def test_checkov_passes_with_every_skip_justified(tmp_path: Path) -> None:
    # The base is a subset of production, so it is scanned through production.
    builds = {name: built(name) for name in ("production", "canary", "shadow")}
    rendered = deploy.render_overlay(
        "readmission-30d", 3, "canary", tmp_path / "rendered", image=PINNED_IMAGE
    )
    builds["rendered-canary"] = build(rendered)
    scan = tmp_path / "scan"
    scan.mkdir()
    report = run_checkov(_scan_dir(scan, builds))
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['resource']} ({Path(c['file_path']).name}): {c['check_name']}"
        for c in results.get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    scanned = {Path(c["file_path"]).stem for c in results["passed_checks"]}
    assert scanned == set(builds)
    pod_checks = {
        c["resource"] for c in results["passed_checks"] if c["resource"].startswith("Pod.")
    }
    assert f"Pod.{NAMESPACE}.readmission-predictor" in pod_checks  # the InferenceService's pods
    for skipped in results.get("skipped_checks", []):
        assert skipped["check_id"] in ALLOWED_SKIPS, skipped["check_id"]
        comment = skipped["check_result"].get("suppress_comment", "")
        assert len(comment) > 30 and comment != "No comment provided", skipped["check_id"]


# --------------------------------------------------------------------------------- serving image

DOCKERFILE = ROOT / "serving" / "Dockerfile"


def test_serving_image_fits_the_pods_that_run_it() -> None:
    """What the manifests rely on (hadolint and the layers: tests/unit/test_dockerfile.py)."""
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001" in text  # the manifests' runAsUser
    assert 'ENTRYPOINT ["hmlops"]' in text
    assert "requirements_for.py pyproject.toml serving > requirements.in" in text
    # Read-only root filesystem: whatever writes must point under /tmp, the pods' emptyDir.
    for var in ("HOME=/tmp", "HMLOPS_STATE_DIR=/tmp/", "NUMBA_CACHE_DIR=/tmp/"):
        assert var in text
    assert "COPY config ./config" in text and (ROOT / "config").exists()


def _reachable_from_the_servers() -> list[str]:
    """Every project module the servers can import, at any depth: function-level imports too
    (the CDS service once imported the evaluation, and through it fairlearn, per call)."""
    import ast

    def source(name: str) -> Path | None:
        base = ROOT.joinpath(*name.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.exists():
                return path
        return None

    queue = [f"serving.{p.stem}" for p in (ROOT / "serving").glob("*.py")]
    seen: set[str] = set()
    while queue:
        name = queue.pop()
        path = source(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                queue += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                queue += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return sorted(seen)


def test_serving_code_imports_without_the_pipeline_extra() -> None:
    """The image installs only the serving extra: the entry point, the servers and every
    project module they can reach must import with Kubeflow, Great Expectations, fairlearn and
    matplotlib absent."""
    modules = _reachable_from_the_servers()
    assert {"serving.cds_service", "hospital_mlops.governance.registry"} <= set(modules)
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {{"kfp", "great_expectations", "fairlearn", "matplotlib"}}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the serving image")
sys.meta_path.insert(0, Block())
import hospital_mlops.cli.main, hospital_mlops.deploy.overlay
for name in {modules!r}:
    importlib.import_module(name)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------------------- live cluster


def _dry_run_targets() -> Iterator[Path]:
    yield from BUILDS.values()


@pytest.mark.cluster
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a cluster (KUBECONFIG)")
@pytest.mark.parametrize("path", list(_dry_run_targets()), ids=list(BUILDS))
def test_server_side_dry_run(path: Path) -> None:
    """The API server, KServe's and Knative's webhooks judge the manifests without persisting
    them (needs the CRDs installed and rights to create these kinds in the namespace)."""
    proc = subprocess.run(
        [kubectl(), "apply", "--dry-run=server", "--validate=strict", "-k", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- RBAC of the tools

RBAC_BUILDS = {
    "rollout-controller": KUSTOMIZE / "rbac" / "rollout-controller",
    "pipeline-runner": KUSTOMIZE / "rbac" / "pipeline-runner",
}


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [role] = of_kind(docs, "Role")
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    [binding] = of_kind(docs, "RoleBinding")
    [account] = of_kind(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]  # fmt: skip
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    return list(role["rules"])


@pytest.mark.parametrize("name", list(RBAC_BUILDS))
def test_the_tools_rbac_builds_and_validates(name: str) -> None:
    docs = build(RBAC_BUILDS[name])
    validate_all(docs)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}


def test_the_rollout_controller_may_touch_only_its_inference_services() -> None:
    docs = build(RBAC_BUILDS["rollout-controller"])
    assert {d["metadata"]["namespace"] for d in docs} == {NAMESPACE}
    rules = _rules(docs)
    assert {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("serving.kserve.io", "inferenceservices")
    }
    named = {v: set(r.get("resourceNames", [])) for r in rules for v in r["verbs"]}
    # every model it rolls out: the first use case's and each use case's own (kustomize/use-cases)
    services = {deploy.SERVICE, *(b.service for b in bound_use_cases(KUSTOMIZE))}
    assert POST_ACUTE in services
    shadows = {f"{s}-shadow" for s in services}
    assert named["get"] == named["patch"] == services | shadows
    assert named["delete"] == shadows  # a champion is never deleted
    assert set(named) == {"get", "patch", "delete", "create"}  # no list, watch, update, escalate


def test_the_pipeline_runner_reads_only_the_launcher_config() -> None:
    rules = _rules(build(RBAC_BUILDS["pipeline-runner"]))
    assert rules == [{"apiGroups": [""], "resources": ["configmaps"],
                      "resourceNames": ["kfp-launcher"], "verbs": ["get"]}]  # fmt: skip
    from pipelines.monitoring_runner import PIPELINE_SERVICE_ACCOUNT, load_recurring_run

    assert load_recurring_run().service_account == PIPELINE_SERVICE_ACCOUNT
    [account] = of_kind(build(RBAC_BUILDS["pipeline-runner"]), "ServiceAccount")
    assert account["metadata"]["name"] == PIPELINE_SERVICE_ACCOUNT


def test_checkov_passes_on_the_tools_rbac(tmp_path: Path) -> None:
    for name, path in RBAC_BUILDS.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(build(path), sort_keys=False))
    results = run_checkov(tmp_path)["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results.get("failed_checks", [])]
    assert not failed, failed
    assert {Path(c["file_path"]).stem for c in results["passed_checks"]} == set(RBAC_BUILDS)


def test_the_serving_losses_are_alerted_on_series_the_predictor_exports() -> None:
    """Each alert reads a series serving/metrics.py exports (a renamed metric would leave an
    alert that never fires), with an owner from the monitoring policy and a valid rule."""
    import re

    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from serving.metrics import Losses

    docs = built("production")
    [rule] = of_kind(docs, "PrometheusRule")
    validate_all([rule])
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"HmlopsPredictionLogLosingRows", "HmlopsDriftEventsUndelivered"}
    exported = {m.name + "_total" for m in Losses().collect()}
    for alert in alerts.values():
        series = set(re.findall(r"hmlops_[a-z_]+", alert["expr"]))
        assert series and series <= exported, (series, exported)
        assert alert["labels"]["owner"] in set(load_monitoring_policy().owners.values())
    assert alerts["HmlopsPredictionLogLosingRows"]["labels"]["severity"] == "critical"
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    assert schema_errors(broken)


def _ingress_namespaces(docs: list[dict[str, Any]], labels: dict[str, str]) -> set[str]:
    """The namespaces the NetworkPolicies let reach a pod with these labels."""
    found = set()
    for policy in of_kind(docs, "NetworkPolicy"):
        if not matches(policy["spec"].get("podSelector", {}), labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                found.add(ns.get("kubernetes.io/metadata.name", NAMESPACE))
    return found


def test_the_mesh_names_who_may_call_each_workload() -> None:
    """Istio's side of authentication on the cluster: strict mTLS, and for every workload one
    ALLOW policy whose every rule names its callers (an identity or a namespace), only callers
    the NetworkPolicies let through anyway, and only identities that exist."""
    docs = built("production")
    [peer] = of_kind(docs, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT" and "selector" not in peer["spec"]
    policies = of_kind(docs, "AuthorizationPolicy")
    validate_all([peer, *policies])
    accounts = {a["metadata"]["name"] for a in of_kind(docs, "ServiceAccount")}
    pods = workload_pods(docs)
    assert len(pods) >= 4
    for pod in pods:
        labels = pod["metadata"]["labels"]
        mine = [p for p in policies if matches(p["spec"]["selector"], labels)]
        assert len(mine) == 1, (pod["metadata"]["name"], [p["metadata"]["name"] for p in mine])
        [policy] = mine
        assert policy["spec"]["action"] == "ALLOW"
        allowed_ns = _ingress_namespaces(docs, labels)
        for rule in policy["spec"]["rules"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to everyone"
            for peer_rule in rule["from"]:
                source = peer_rule["source"]
                assert set(source.get("namespaces", [])) <= allowed_ns, (pod["metadata"]["name"],
                                                                        allowed_ns)  # fmt: skip
                for principal in source.get("principals", []):
                    ns, account = principal.split("/")[2], principal.split("/")[4]
                    if ns == NAMESPACE:
                        assert account in accounts, principal
                    else:
                        assert ns in allowed_ns, principal
    # the CDS service is reachable only from the ingress gateway; nothing else may call it
    [cds] = [p for p in policies if p["metadata"]["name"] == "cds-callers"]
    sources = [f["source"] for r in cds["spec"]["rules"] for f in r["from"]]
    assert all(set(s) == {"principals"} for s in sources)
    broken = copy.deepcopy(cds)
    broken["spec"]["rules"][0]["from"][0]["source"] = {}
    assert schema_errors(broken)  # an empty source would match every caller
