"""What clinicians see when the model cannot answer (``config/fallback.yaml``).

Three modes, chosen by clinical leadership (docs/fallback.md):

* ``no_score``: say plainly that the risk is unavailable; staff use usual judgement;
* ``static_rule``: a documented rule over a few inputs, labelled as not the model's risk;
* ``last_cached_score``: the encounter's last score, with its age and model version, if it is
  younger than the configured maximum.

A fallback answer never looks like a model answer: it carries ``fallback: true``, the mode that
answered, why the model did not, and a message that says so. Pure: the caller supplies the
cached score (``prediction_log.last_score``) and the time.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_models
from hospital_mlops.paths import config_path

Mode = Literal["no_score", "static_rule", "last_cached_score"]
Cause = Literal["unavailable", "not_ready", "failed"]
CAUSES: dict[str, str] = {
    "unavailable": "the model service did not answer",
    "not_ready": "the model service is not ready (its model failed verification or is loading)",
    "failed": "the model service failed",
}


class FallbackPolicyError(ValueError):
    pass


class Criterion(StrictModel):
    field: str
    at_least: float


class StaticRule(StrictModel):
    name: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1)
    any_of: tuple[Criterion, ...] = Field(min_length=1)


class CachedScorePolicy(StrictModel):
    max_age_hours: float = Field(gt=0, le=168)


class Messages(StrictModel):
    no_score: str = Field(min_length=1)
    static_rule_flagged: str = Field(min_length=1)
    static_rule_clear: str = Field(min_length=1)
    cached: str = Field(min_length=1)


_PLACEHOLDERS = {
    "no_score": set(),
    "static_rule_flagged": {"rule", "met"},
    "static_rule_clear": {"rule"},
    "cached": {"risk_percent", "band", "age_hours", "model_version"},
}


class FallbackPolicy(StrictModel):
    # the use case this document is for (config/use_case.yaml); None: the first use case's
    use_case: str | None = None
    mode: Mode
    when_no_cached_score: Literal["no_score", "static_rule"] = "no_score"
    last_cached_score: CachedScorePolicy
    static_rule: StaticRule
    messages: Messages

    @model_validator(mode="after")
    def _messages_use_known_placeholders(self) -> FallbackPolicy:
        for name, allowed in _PLACEHOLDERS.items():
            text = getattr(self.messages, name)
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as exc:
                raise ValueError(f"messages.{name}: {exc}") from None
            unknown = {u.split(".")[0].split("[")[0] for u in used} - allowed
            if unknown:
                may = sorted(allowed) or "none"
                raise ValueError(f"messages.{name} uses {sorted(unknown)}; it may use {may}")
        return self


def load_fallback_policies(path: Path | str | None = None) -> dict[str, FallbackPolicy]:
    """Every use case's policy by use case id (one YAML document each; one without
    ``use_case`` is the first use case's), each rule's fields checked against its own model's
    request contract (numeric inputs its predictor accepts)."""
    from hospital_mlops.features import primary_feature_set, served_inputs
    from hospital_mlops.use_case import load_use_case

    where = Path(path) if path else config_path("fallback.yaml")
    first = load_use_case().id
    found: dict[str, FallbackPolicy] = {}
    for n, policy in enumerate(
        load_yaml_models(where, FallbackPolicy, FallbackPolicyError, "fallback policy")
    ):
        key = policy.use_case or first
        if key in found:
            raise FallbackPolicyError(
                f"fallback policy {where}: document {n + 1} repeats use case {key}"
            )
        use_case = load_use_case(use_case=key)
        served = served_inputs(primary_feature_set(use_case))
        numeric = {f.name for f in served.fields if f.spec.type in ("integer", "float")}
        for i, criterion in enumerate(policy.static_rule.any_of):
            if criterion.field not in numeric:
                raise FallbackPolicyError(
                    f"fallback policy {where} is invalid:\n  static_rule.any_of.{i}.field: "
                    f"{criterion.field!r} is not a numeric input of the request contract of "
                    f"{use_case.id} ({', '.join(sorted(numeric))})"
                )
        found[key] = policy
    if first not in found:
        raise FallbackPolicyError(f"fallback policy {where}: no document for the first use case")
    return found


def load_fallback_policy(
    path: Path | str | None = None, use_case: str | None = None
) -> FallbackPolicy:
    """The policy of ``use_case`` (None: the first use case's)."""
    from hospital_mlops.use_case import load_use_case

    key = use_case or load_use_case().id
    policies = load_fallback_policies(path)
    if key not in policies:
        raise FallbackPolicyError(f"fallback policy: no document for use case {key!r}")
    return policies[key]


@dataclass(frozen=True)
class CachedScore:
    prediction_id: str
    risk: float
    band: str
    alert: bool
    scored_at: datetime
    model_version: str


@dataclass(frozen=True)
class FallbackAnswer:
    mode: Mode  # the mode that answered (a cached-score policy may answer with no_score)
    cause: Cause
    message: str
    alert: bool | None = None  # the rule's flag or the cached score's alert; None: no opinion
    risk: float | None = None  # only a cached score has one, and it is old
    band: str | None = None
    age_hours: float | None = None
    model_version: str | None = None
    prediction_id: str | None = None  # of the cached prediction
    criteria_met: list[str] = field(default_factory=list)
    criteria_unknown: list[str] = field(default_factory=list)
    fallback: bool = True

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cause_text"] = CAUSES[self.cause]
        return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _describe(c: Criterion) -> str:
    return f"{c.field} ≥ {c.at_least:g}"


def _rule(policy: FallbackPolicy, instance: Any, cause: Cause) -> FallbackAnswer:
    rule = policy.static_rule
    values = instance if isinstance(instance, dict) else {}
    met, unknown = [], []
    for c in rule.any_of:
        value = _number(values.get(c.field))
        if value is None:
            unknown.append(c.field)
        elif value >= c.at_least:
            met.append(_describe(c))
    if met:
        text = policy.messages.static_rule_flagged.format(rule=rule.name, met="; ".join(met))
        return FallbackAnswer("static_rule", cause, text, True, criteria_met=met,
                              criteria_unknown=unknown)  # fmt: skip
    if unknown:  # "not flagged" would claim more than the rule could check
        return FallbackAnswer("no_score", cause, policy.messages.no_score, criteria_unknown=unknown)
    text = policy.messages.static_rule_clear.format(rule=rule.name)
    return FallbackAnswer("static_rule", cause, text, False)


def fallback_answer(
    policy: FallbackPolicy,
    instance: Any,
    cause: Cause,
    cached: CachedScore | None,
    now: datetime,
) -> FallbackAnswer:
    """What to show for one instance the model could not score."""
    if policy.mode == "static_rule":
        return _rule(policy, instance, cause)
    if policy.mode == "last_cached_score":
        if cached is not None:
            age = (now - cached.scored_at).total_seconds() / 3600
            if 0 <= age <= policy.last_cached_score.max_age_hours:
                text = policy.messages.cached.format(
                    risk_percent=round(100 * cached.risk),
                    band=cached.band,
                    age_hours=age,
                    model_version=cached.model_version,
                )
                return FallbackAnswer(
                    "last_cached_score",
                    cause,
                    text,
                    cached.alert,
                    cached.risk,
                    cached.band,
                    round(age, 2),
                    cached.model_version,
                    cached.prediction_id,
                )
        if policy.when_no_cached_score == "static_rule":
            return _rule(policy, instance, cause)
    return FallbackAnswer("no_score", cause, policy.messages.no_score)
