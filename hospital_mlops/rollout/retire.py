"""Retiring a model version: a recorded governance action that takes it out of use and keeps
every piece of evidence (docs/runbooks/retirement.md). It lives with the rollout because it is
refused mid-rollout and recorded in the rollout audit; the registry's side (the ``retired`` tag
and ``retired()``) stays in governance/registry.py.

Refused for the champion (promote its successor first; ``withdraw`` for a model withdrawn with
no successor) and for a version mid-rollout (roll it back first). Removes the version's aliases,
tags it ``retired`` with who, when and why, and appends the action to the rollout audit log.
Nothing is deleted: the run, the files and the evidence stay, and lineage still resolves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hospital_mlops.governance.registry import retired, store_errors


class RetirementRefused(PermissionError):
    pass


@store_errors
def retire(model: str, version: int, by: str, reason: str, *, withdraw: bool = False) -> dict:
    from hospital_mlops.governance import registry
    from hospital_mlops.rollout import audit
    from hospital_mlops.rollout.commands import rollout_dir
    from hospital_mlops.rollout.policy import load_rollout_policy
    from hospital_mlops.rollout.state import load_state, state_path

    if not by.strip():
        raise registry.RegistryError("a retirement needs the name of the person retiring (--by)")
    if not reason.strip():
        raise registry.RegistryError("a retirement needs a --reason for the record")
    c = registry.client()
    mv = registry.model_version(c, model, version)
    if retired(mv):
        raise RetirementRefused(f"{model} version {version} is already retired: {retired(mv)}")
    aliases = sorted(
        alias
        for alias, v in (c.get_registered_model(model).aliases or {}).items()
        if str(v) == str(version)
    )
    if "champion" in aliases and not withdraw:
        raise RetirementRefused(
            f"{model} version {version} is the champion: promote its successor first, or "
            "--withdraw the model altogether (see docs/runbooks/retirement.md)"
        )
    state = load_state(state_path(rollout_dir(), model), load_rollout_policy())
    if state is not None and state.active and state.candidate_version == version:
        raise RetirementRefused(
            f"{model} version {version} is mid-rollout ({state.stage}): roll it back first "
            f"(hmlops rollout rollback --version {version} --reason …)"
        )
    record = {"by": by.strip(), "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "reason": reason.strip()[:500], "aliases_removed": aliases}  # fmt: skip
    entry = audit.append_audit(
        rollout_dir() / "audit.jsonl",
        {
            "model": model,
            "version": version,
            "command": "withdraw" if withdraw else "retire",
            "actor": record["by"],
            "decided_by": "operator",
            "decision": "retire",
            "stage_before": ", ".join(aliases) or "no alias",
            "stage_after": "retired",
            "note": record["reason"],
            "changed_state": False,
        },
    )
    for alias in aliases:
        c.delete_registered_model_alias(model, alias)
    c.set_model_version_tag(model, str(version), registry.RETIRED_TAG, json.dumps(record))
    return {"model": model, "version": version, **record, "audit_seq": entry["seq"]}
