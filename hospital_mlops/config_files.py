"""Loading YAML config files into typed models: one place for the errors a reviewer reads.

Every config (catalog, use case, governance) fails the same way: the file, then each wrong key by
its YAML path and what is wrong with it. Nothing is silently defaulted past a typo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors; loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def yaml_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_yaml_model(path: Path, model: type[Model], error: type[Exception], what: str) -> Model:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    return _validated(raw, path, model, error, what)


def load_yaml_models(
    path: Path, model: type[Model], error: type[Exception], what: str
) -> list[Model]:
    """Every document of a multi-document YAML file (``---`` between them), each validated."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    if not docs:
        raise error(f"{what} {path} holds no document")
    where = (lambda n: f"{path} (document {n + 1})") if len(docs) > 1 else (lambda n: str(path))
    return [_validated(raw, where(n), model, error, what) for n, raw in enumerate(docs)]


def _validated(
    raw: object,
    path: Path | str,
    model: type[Model],
    error: type[Exception],
    what: str,
    under: str = "",
) -> Model:
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: the top level must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {under}{yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise error(f"{what} {path} is invalid:\n" + "\n".join(lines)) from exc


def deep_merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys over it, mappings merged key by key, anything else
    (lists included) replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = (
            deep_merged(below, value)
            if isinstance(below, dict) and isinstance(value, dict)
            else value
        )
    return merged


def validated_override(
    base: Model,
    override: object,
    path: Path | str,
    key: str,
    error: type[Exception],
    what: str,
) -> Model:
    """``base`` with a mapping of differences (at ``key`` of the file ``path``) merged over it,
    validated as a whole; a wrong key or value fails naming its path under ``key``."""
    if not isinstance(override, dict):
        raise error(f"{what} {path} is invalid:\n  {key}: must be a mapping of differences")
    merged = deep_merged(base.model_dump(mode="json"), override)
    return _validated(merged, path, type(base), error, what, under=f"{key}.")
