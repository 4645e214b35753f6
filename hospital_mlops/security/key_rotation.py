"""HMAC key rotation: a crosswalk from the retired key's tokens to the new key's, and the rekeying
of the stores that keep tokens.

Why rekey rather than keep two keys forever: a key is rotated because it may have leaked, or by
policy, and the retired key can be destroyed only once no store still holds tokens made with it.
The crosswalk is built where raw identifiers are allowed, the ingest layer's raw snapshots: each
distinct identifier is tokenized with both keys, exactly as normalize does it, and only the pairs
of tokens are kept. It holds no raw identifier, it is an immutable content-hashed snapshot, and
its lineage node names the raw snapshots it was made from and both key ids, so a token from
before the rotation stays resolvable to its source extract.

Published snapshots are immutable: those made before the rotation keep the old tokens, and their
lineage records the old key id; the crosswalk translates them. The prediction log (predictions
and outcomes) is operational and is rekeyed in place, in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hospital_mlops.data.catalog import SourceSpec
from hospital_mlops.data.lineage import LineageStore, code_version, utc_now
from hospital_mlops.data.normalize import (
    HmacKey,
    NormalizeReport,
    prepare_extract,
    token_function,
    token_inputs,
)
from hospital_mlops.data.snapshots import (
    SnapshotIntegrityError,
    read_manifest,
    read_tables,
    verify_snapshot,
    write_snapshot,
)
from hospital_mlops.model.scoring import ENCOUNTER_TOKEN

CROSSWALK_KIND = "token_crosswalk"
CROSSWALK_TABLE = "crosswalk"
ZONE = "crosswalks"


class KeyRotationError(ValueError):
    """The rotation step cannot run as asked; nothing was written or changed."""


@dataclass(frozen=True)
class Crosswalk:
    old_key_id: str
    new_key_id: str
    pairs: pd.DataFrame  # namespace, old_token, new_token
    raw_snapshots: tuple[str, ...]
    path: Path | None = None

    def mapping(self, namespace: str) -> dict[str, str]:
        rows = self.pairs[self.pairs["namespace"] == namespace]
        return dict(zip(rows["old_token"], rows["new_token"], strict=True))


def raw_snapshots(store: Path, source: str) -> list[Path]:
    """The source's raw snapshots in the ingest layer, oldest first (a half-written one is never
    listed: it is still a hidden staging directory)."""
    zone = store / "raw"
    found = []
    for directory in sorted(zone.iterdir()) if zone.is_dir() else []:
        if directory.name.startswith(".") or not directory.is_dir():
            continue
        try:
            manifest = read_manifest(directory)
        except (OSError, ValueError) as exc:
            raise KeyRotationError(
                f"raw snapshot {directory} has no readable manifest ({type(exc).__name__}): "
                "a crosswalk built without it would miss its identifiers"
            ) from None
        if manifest.get("source") == source:
            found.append((str(manifest.get("created_at", "")), directory))
    return [d for _, d in sorted(found)]


def _pairs(
    raw: dict[str, pd.DataFrame], spec: SourceSpec, old: HmacKey, new: HmacKey
) -> Iterator[pd.DataFrame]:
    prepared = prepare_extract(raw, spec, NormalizeReport())
    for namespace, values in token_inputs(prepared, spec).items():
        yield pd.DataFrame(
            {
                "namespace": namespace,
                "old_token": token_function(old, namespace)(values),
                "new_token": token_function(new, namespace)(values),
            }
        )


def build_crosswalk(
    store: Path, source: str, spec: SourceSpec, old: HmacKey, new: HmacKey
) -> Crosswalk:
    """Token pairs (old key → new key) for every identifier in every raw snapshot of
    ``source``; each snapshot is verified against its hashes before it is read."""
    if old.key_id == new.key_id:
        raise KeyRotationError(f"the old and new keys are the same key ({new.key_id})")
    snapshots = raw_snapshots(store, source)
    if not snapshots:
        raise KeyRotationError(
            f"no raw snapshot of {source!r} under {store / 'raw'}: the crosswalk is built from "
            "the ingest layer (pass the store the pipeline ran in)"
        )
    frames: list[pd.DataFrame] = []
    shas: list[str] = []
    for directory in snapshots:
        try:
            shas.append(verify_snapshot(directory)["sha256"])
        except (SnapshotIntegrityError, OSError) as exc:
            raise KeyRotationError(f"{exc}; no crosswalk was written") from None
        frames.extend(_pairs(read_tables(directory), spec, old, new))
    pairs = (
        pd.concat(frames, ignore_index=True)
        .drop_duplicates()
        .sort_values(["namespace", "old_token"], kind="stable")
        .reset_index(drop=True)
    )
    # 128-bit tokens do not collide in practice; if two identifiers ever did, a rekey could not
    # tell them apart, so that is an error, never a silent merge.
    for column in ("old_token", "new_token"):
        clashes = pairs.duplicated(subset=["namespace", column]).sum()
        if clashes:
            raise KeyRotationError(f"{clashes} {column} value(s) map to two identifiers")
    return Crosswalk(old.key_id, new.key_id, pairs, tuple(shas))


def write_crosswalk(crosswalk: Crosswalk, store: Path, source: str) -> Crosswalk:
    """An immutable, content-hashed snapshot under ``<store>/crosswalks/`` and its lineage node
    (parents: the raw snapshots)."""
    fields: dict[str, Any] = {
        "kind": CROSSWALK_KIND,
        "layer": "ingest",
        "source": source,
        "old_hmac_key_id": crosswalk.old_key_id,
        "new_hmac_key_id": crosswalk.new_key_id,
        "hmac_key_id": crosswalk.new_key_id,
        "parents": [{"kind": "raw", "sha256": sha} for sha in crosswalk.raw_snapshots],
        "counts": {str(k): int(v) for k, v in crosswalk.pairs["namespace"].value_counts().items()},
        "code_version": code_version(),
        "created_at": utc_now(),
    }
    path, manifest = write_snapshot({CROSSWALK_TABLE: crosswalk.pairs}, store / ZONE, fields)
    LineageStore(store).record_node({**manifest, "path": str(path)})
    return Crosswalk(
        crosswalk.old_key_id, crosswalk.new_key_id, crosswalk.pairs, crosswalk.raw_snapshots, path
    )


def read_crosswalk(path: Path) -> Crosswalk:
    manifest = verify_snapshot(path)
    if manifest.get("kind") != CROSSWALK_KIND:
        raise KeyRotationError(f"{path} is a {manifest.get('kind')!r} snapshot, not a crosswalk")
    pairs = read_tables(path, [CROSSWALK_TABLE])[CROSSWALK_TABLE]
    return Crosswalk(
        str(manifest["old_hmac_key_id"]),
        str(manifest["new_hmac_key_id"]),
        pairs,
        tuple(p["sha256"] for p in manifest.get("parents", [])),
        path,
    )


def find_crosswalk(store: Path, old_key_id: str, new_key_id: str) -> Crosswalk:
    """The newest crosswalk between the two keys in ``store``."""
    zone = store / ZONE
    candidates = []
    for directory in sorted(zone.iterdir()) if zone.is_dir() else []:
        if directory.name.startswith("."):
            continue
        manifest = read_manifest(directory)
        if (manifest.get("old_hmac_key_id"), manifest.get("new_hmac_key_id")) == (
            old_key_id,
            new_key_id,
        ):
            candidates.append((str(manifest.get("created_at", "")), directory))
    if not candidates:
        raise KeyRotationError(
            f"no crosswalk from key {old_key_id} to {new_key_id} under {zone}: build it with "
            "`hmlops keys crosswalk`"
        )
    return read_crosswalk(max(candidates)[1])


def translate(crosswalk: Crosswalk, namespace: str, tokens: list[str]) -> dict[str, str | None]:
    """Each old token's new token (None when the crosswalk does not know it)."""
    mapping = crosswalk.mapping(namespace)
    return {t: mapping.get(t) for t in tokens}


# --- the prediction log --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rekeyed:
    predictions: int  # rows whose encounter token was rewritten
    outcomes: int
    already_current: int  # tokens already made with the new key (a rerun)
    unknown: int  # tokens in neither column of the crosswalk: left as they were, reported

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


REKEYS = "token_rekeys"


def _rekeys_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        REKEYS,
        metadata,
        sa.Column("crosswalk_sha256", sa.String(64), primary_key=True),
        sa.Column("old_hmac_key_id", sa.String(40), nullable=False),
        sa.Column("new_hmac_key_id", sa.String(40), nullable=False),
        sa.Column("rekeyed_at", sa.String(40), nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
    )


def rekey_prediction_log(engine: sa.Engine, crosswalk: Crosswalk) -> Rekeyed:
    """Rewrite every encounter token the old key made, in the predictions (column and the
    logged instance) and the outcomes, to the new key's token, in one transaction: a failure
    changes nothing. Records the rekey in ``token_rekeys``. Running it again changes nothing."""
    from hospital_mlops.inference.prediction_log import predictions
    from hospital_mlops.monitoring.outcomes import outcomes as outcomes_table

    if crosswalk.path is None:
        raise KeyRotationError("rekey from a written crosswalk (write_crosswalk): it is the record")
    mapping = crosswalk.mapping(ENCOUNTER_TOKEN)
    current = set(mapping.values())
    metadata = sa.MetaData()
    rekeys = _rekeys_table(metadata)
    metadata.create_all(engine)
    outcomes_table.create(engine, checkfirst=True)
    counts = {"predictions": 0, "outcomes": 0, "already_current": 0, "unknown": 0}
    seen: set[str] = set()
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(
                predictions.c.prediction_id, predictions.c.encounter_token, predictions.c.inputs
            ).where(predictions.c.encounter_token.is_not(None))
        ).all()
        for prediction_id, token, inputs in rows:
            new = mapping.get(token)
            if new is None:
                if token not in seen:
                    counts["already_current" if token in current else "unknown"] += 1
                    seen.add(token)
                continue
            instance = json.loads(inputs)
            if isinstance(instance, dict) and instance.get(ENCOUNTER_TOKEN) == token:
                instance[ENCOUNTER_TOKEN] = new
            conn.execute(
                predictions.update()
                .where(predictions.c.prediction_id == prediction_id)
                .values(
                    encounter_token=new,
                    inputs=json.dumps(instance, sort_keys=True, default=str),
                )
            )
            counts["predictions"] += 1
        known = dict(
            conn.execute(
                sa.select(outcomes_table.c.encounter_token, outcomes_table.c.readmitted_30d)
            ).all()
        )
        for token, label in known.items():
            new = mapping.get(token)
            if new is not None and new in known:
                # the same encounter's outcome arrived under both keys: keep one, if they agree
                if bool(known[new]) != bool(label):
                    raise KeyRotationError(
                        f"encounter {new}: its outcome under the old key contradicts the one "
                        "under the new key; nothing was rekeyed"
                    )
                conn.execute(
                    sa.delete(outcomes_table).where(outcomes_table.c.encounter_token == token)
                )
                counts["outcomes"] += 1
            elif new is not None:
                conn.execute(
                    outcomes_table.update()
                    .where(outcomes_table.c.encounter_token == token)
                    .values(encounter_token=new)
                )
                counts["outcomes"] += 1
        sha = crosswalk.path.name
        if counts["predictions"] or counts["outcomes"]:
            conn.execute(sa.delete(rekeys).where(rekeys.c.crosswalk_sha256 == sha))
            conn.execute(
                rekeys.insert().values(
                    crosswalk_sha256=sha,
                    old_hmac_key_id=crosswalk.old_key_id,
                    new_hmac_key_id=crosswalk.new_key_id,
                    rekeyed_at=utc_now(),
                    counts=json.dumps(counts, sort_keys=True),
                )
            )
    return Rekeyed(**counts)


def earlier_tokens(previous: tuple[HmacKey, ...], namespace: str, value: str) -> list[str]:
    """``value``'s tokens under the keys being retired: what to look for during a rotation,
    before the stores are rekeyed."""
    values = np.array([value], dtype=object)
    return [str(token_function(key, namespace)(values)[0]) for key in previous]
