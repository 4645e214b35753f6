"""The rollout state file refuses impossible states; the audit log detects any edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hospital_mlops.rollout.audit import (
    AuditLogError,
    append_audit,
    last_action,
    read_audit,
    rolled_back_versions,
)
from hospital_mlops.rollout.policy import load_rollout_policy
from hospital_mlops.rollout.state import (
    RolloutRecord,
    RolloutStateError,
    load_state,
    save_state,
    state_path,
)

POLICY = load_rollout_policy()


def _record(**change) -> dict:
    base = {
        "model": "readmission-30d",
        "candidate_version": 2,
        "champion_version": 1,
        "stage": "canary",
        "canary_step": 1,
        "stage_started_at": "2026-01-20T00:00:00+00:00",
        "history": [
            {"stage": "shadow", "entered_at": "2026-01-01T00:00:00+00:00"},
            {"stage": "silent", "entered_at": "2026-01-09T00:00:00+00:00"},
            {"stage": "canary", "canary_percent": 10, "entered_at": "2026-01-16T00:00:00+00:00"},
            {"stage": "canary", "canary_percent": 50, "entered_at": "2026-01-20T00:00:00+00:00"},
        ],
    }
    base.update(change)
    return base


def _write(tmp_path: Path, raw: dict) -> Path:
    path = state_path(tmp_path, "readmission-30d")
    path.write_text(json.dumps(raw))
    return path


def test_a_possible_state_round_trips(tmp_path: Path) -> None:
    record = RolloutRecord.model_validate(_record())
    path = state_path(tmp_path, "readmission-30d")
    save_state(path, record)
    assert load_state(path, POLICY) == record
    assert record.position().label(POLICY) == "canary 50%"
    assert not list(tmp_path.glob("*.partial"))
    assert load_state(tmp_path / "absent.json", POLICY) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "production"}, "stage"),
        ({"canary_step": 5}, "canary_step 5: the policy has 2 canary steps"),
        ({"stage": "full", "canary_step": 1}, "canary_step 1 outside the canary stage"),
        ({"candidate_version": 1}, "already the champion"),
        ({"stage_started_at": "2026-01-21T00:00:00+00:00"}, "is not the last history entry"),
        ({"stage_started_at": "2026-01-20T00:00:00"}, "UTC offset"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_impossible_states_are_refused_naming_the_problem(tmp_path, change, message) -> None:
    path = _write(tmp_path, _record(**change))
    with pytest.raises(RolloutStateError) as caught:
        load_state(path, POLICY)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_history_that_skips_or_reverses_a_stage_is_refused(tmp_path) -> None:
    skipped = _record(stage="canary", canary_step=0, stage_started_at="2026-01-16T00:00:00+00:00")
    skipped["history"] = [skipped["history"][0], skipped["history"][2]]  # shadow → canary
    with pytest.raises(RolloutStateError, match="'canary' cannot follow 'shadow'"):
        load_state(_write(tmp_path, skipped), POLICY)
    backwards = _record()
    backwards["history"][3]["canary_percent"] = 10
    with pytest.raises(RolloutStateError, match="cannot follow"):
        load_state(_write(tmp_path, backwards), POLICY)
    odd_step = _record()
    odd_step["history"][3]["canary_percent"] = 30
    with pytest.raises(RolloutStateError, match="policy's steps"):
        load_state(_write(tmp_path, odd_step), POLICY)
    after_end = _record(stage="silent", canary_step=0, stage_started_at="2026-02-01T00:00:00+00:00")
    after_end["history"] = [
        {"stage": "shadow", "entered_at": "2026-01-01T00:00:00+00:00"},
        {"stage": "rolled_back", "entered_at": "2026-01-05T00:00:00+00:00"},
        {"stage": "silent", "entered_at": "2026-02-01T00:00:00+00:00"},
    ]
    with pytest.raises(RolloutStateError, match="'silent' cannot follow 'rolled_back'"):
        load_state(_write(tmp_path, after_end), POLICY)


def test_unreadable_state_is_refused(tmp_path) -> None:
    path = state_path(tmp_path, "readmission-30d")
    path.write_text("{not json")
    with pytest.raises(RolloutStateError, match="not readable JSON"):
        load_state(path, POLICY)


def test_the_audit_chain_records_and_verifies(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    first = append_audit(path, {"model": "m", "changed_state": True, "stage_after": "shadow"})
    append_audit(path, {"model": "m", "changed_state": False, "stage_after": "shadow"})
    third = append_audit(path, {"model": "other", "changed_state": True, "stage_after": "x"})
    entries = read_audit(path)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[1]["prev_sha256"] == entries[0]["sha256"]
    assert last_action(entries, "m")["sha256"] == first["sha256"]  # the hold changed nothing
    assert last_action(entries, "other")["sha256"] == third["sha256"]
    assert last_action(entries, "nobody") is None


def test_a_version_counts_as_rolled_back_only_while_its_last_rollout_says_so(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"

    def decided(model: str, version: int, phase: str, changed: bool = True) -> None:
        state = {"candidate_version": version, "phase": phase} if changed else None
        append_audit(path, {"model": model, "changed_state": changed, "result_state": state})

    decided("m", 2, "shadow")
    decided("m", 2, "rolled_back")
    decided("m", 3, "canary")
    decided("m", 3, "rolled_back")
    decided("m", 3, "shadow")  # tried again after a fix: waiting once more
    decided("m", 4, "rolled_back", changed=False)  # a refusal changes nothing
    decided("other", 5, "rolled_back")
    assert rolled_back_versions(read_audit(path), "m") == {2}
    assert rolled_back_versions(read_audit(path), "other") == {5}


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "garbage"])
def test_any_edit_to_the_audit_log_is_detected(tmp_path, tamper) -> None:
    path = tmp_path / "audit.jsonl"
    for stage in ("shadow", "silent", "canary 10%"):
        append_audit(path, {"model": "m", "changed_state": True, "stage_after": stage})
    lines = path.read_text().splitlines()
    if tamper == "edit":
        lines[1] = lines[1].replace('"silent"', '"full"')
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(1, "not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match="line 2"):
        read_audit(path)
    with pytest.raises(AuditLogError):  # and nothing more is appended to a broken chain
        append_audit(path, {"model": "m", "changed_state": True})
