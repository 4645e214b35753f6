"""Per-window break-downs by the request's own fields, with small cells suppressed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.dialects import postgresql

from e2e.local_postgres import LocalPostgres
from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, predictions, records
from hospital_mlops.monitoring.breakdowns import MISSING, breakdown_cells, json_field
from hospital_mlops.monitoring.outcomes import outcomes_table
from hospital_mlops.monitoring.policy import MonitoringPolicyError, load_monitoring_policy
from hospital_mlops.monitoring.report import monitoring_html
from hospital_mlops.monitoring.run import logged_predictions
from hospital_mlops.paths import config_path

POLICY = load_monitoring_policy()


def _frame(rng: np.random.Generator) -> pd.DataFrame:
    n = 2000
    race = rng.choice(["Caucasian", "AfricanAmerican", "Asian"], n, p=[0.7, 0.297, 0.003])
    risk = rng.uniform(0.05, 0.4, n)
    # the model under-predicts for one group: its observed events are doubled
    inflate = np.where(race == "AfricanAmerican", 2.0, 1.0)
    outcome = (rng.random(n) < np.clip(risk * inflate, 0, 1)).astype(float)
    outcome[n // 2 :] = np.nan  # half still waiting for outcomes
    return pd.DataFrame(
        {
            "scored_at": pd.Timestamp("2026-01-08T00:00:00Z")
            + pd.to_timedelta(rng.integers(0, 6 * 86400, n), unit="s"),
            "risk": risk,
            "alert": risk > 0.3,
            "outcome": outcome,
            "race": race,
            "sex": rng.choice(["Female", "Male", None], n, p=[0.5, 0.45, 0.05]),
            "age": "[70-80)",
            "admission_source": "7",
        }
    )


def test_cells_per_window_and_group_with_small_ones_suppressed() -> None:
    cells = breakdown_cells(_frame(np.random.default_rng(0)), POLICY)
    by = {(c.breakdown, c.group): c for c in cells}
    assert {c.window_start for c in cells} == {"2026-01-08T00:00:00Z"}
    asian = by[("race", "Asian")]
    assert asian.suppressed and asian.n is None and asian.alerts_per_100 is None
    white, black = by[("race", "Caucasian")], by[("race", "AfricanAmerican")]
    assert not white.suppressed and white.n > 1000
    assert 0.8 < white.observed_to_expected < 1.25  # outcomes drawn from the risks
    assert black.observed_to_expected > 1.6  # the group the model under-predicts stands out
    assert white.auroc is not None and 0.5 < white.auroc < 0.8
    assert by[("sex", MISSING)].n is not None  # a field the request did not send is its own group
    assert sum(c.n or 0 for c in cells if c.breakdown == "age") == 2000


def test_a_breakdown_must_name_a_request_field_of_the_monitored_model(tmp_path: Path) -> None:
    from hospital_mlops.features import SYNTHETIC, feature_set_for, served_inputs

    raw = yaml.safe_load(config_path("monitoring.yaml").read_text())
    raw["breakdowns"]["by"]["site"] = "site"
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(raw))
    policy = load_monitoring_policy(path)  # which model it monitors is known only at run time
    readmission = set(served_inputs(feature_set_for("diabetes130")).inputs)
    with pytest.raises(MonitoringPolicyError, match=r"\{'site': 'site'\}.*of m/1 do not carry"):
        policy.breakdowns.check_fields(readmission, "m/1")
    # a model on the synthetic source sends its site: the same break-down is its own field
    raw["breakdowns"]["by"] = {"site": "site", "race": "race"}
    path.write_text(yaml.safe_dump(raw))
    load_monitoring_policy(path).breakdowns.check_fields(set(served_inputs(SYNTHETIC).inputs), "s")
    with pytest.raises(MonitoringPolicyError, match="gender"):
        POLICY.breakdowns.check_fields(set(served_inputs(SYNTHETIC).inputs), "s/1")


def test_fields_come_out_of_the_logged_request_in_the_database(store_url: str) -> None:
    log = PredictionLog(store_url)
    served = ServedModel("m", 1, "0" * 64, "fs", "", "diabetes130")
    answers = [
        {"prediction_id": f"{i:036d}", "scored_at": "2026-01-08T01:00:00Z", "risk": 0.2,
         "alert": False}
        for i in range(2)
    ]  # fmt: skip
    instances = [{"race": "Asian", "gender": "Female", "admission_source_id": 7}, {"age": None}]
    log.write(records("r", "v1", served, instances, answers))
    frame = logged_predictions(log, "m", 1, POLICY.breakdowns.by)
    log.close()
    assert frame[["race", "sex", "admission_source"]].iloc[0].tolist() == ["Asian", "Female", "7"]
    assert frame[["race", "age"]].iloc[1].isna().all()
    # PostgreSQL: the same field through its own JSON operator
    column = sa.table("predictions", sa.column("inputs", sa.Text)).c.inputs
    pg = sa.create_mock_engine("postgresql://", lambda *a, **k: None)
    sql = str(sa.select(json_field(pg, column, "race")).compile(dialect=postgresql.dialect()))
    assert "->>" in sql and "JSONB" in sql


def test_the_report_shows_the_latest_window_and_hides_small_cells() -> None:
    cells = [c.as_dict() for c in breakdown_cells(_frame(np.random.default_rng(1)), POLICY)]
    run = {
        "model": "m/1",
        "predictions": 2000,
        "with_outcomes": 1000,
        "windows": [],
        "alerts": [],
        "baseline": {"auroc": 0.68, "ece": 0.01, "alerts_per_100": 20.0},
        "policy": {"override_reasons": []},
        "breakdowns": cells,
    }
    page = monitoring_html(run)
    assert "By subgroup (window starting 2026-01-08)" in page
    row = page[page.index("<td>Asian</td>") :].split("</tr>")[0]
    assert "&lt;11" in row and "0." not in row  # listed, no numbers
    assert '<tr class="flag"><td>race</td><td>AfricanAmerican</td>' in page
    json.dumps(run)  # the run stays JSON


def _log_every_kind_of_row(url: str) -> None:
    """Requests with awkward field values, outcomes known and not, rows the read must leave
    out; enough of them (with a request's size) to fill several table blocks."""
    log = PredictionLog(url)
    served = ServedModel("m", 1, "0" * 64, "fs", "", "diabetes130")
    races = ["Caucasian", 'Ñandú "quoted"', "comma, and\nnewline", "", None, "AfricanAmerican"]
    instances: list[object] = []
    answers = []
    for i in range(300):
        instance = {
            "encounter_token": f"tok{i:05d}",
            "race": races[i % len(races)],
            "gender": ["Female", "Male"][i % 2],
            "age": "[70-80)",
            "admission_source_id": [7, "7", 17][i % 3],
            "notes": "x" * 600,  # a real request's size
        }
        if i % 7 == 0:
            del instance["gender"]  # not sent
        if i % 11 == 0:
            del instance["encounter_token"]  # no token: no outcome can join
        instances.append(instance)
        answers.append(
            {
                "prediction_id": f"p{i:05d}",
                "scored_at": f"2026-01-{1 + i % 20:02d}T0{i % 10}:00:00.{i:06d}Z",
                "risk": round(0.01 + i / 400, 6),
                "alert": i % 3 == 0,
            }
        )
    instances.append([1, 2])  # a request that is not an object: no fields, still a row
    answers.append({"prediction_id": "list", "scored_at": "2026-01-05T00:00:00Z", "risk": 0.9})
    log.write(records("r", "v1", served, instances, answers))
    other = ServedModel("m", 2, "0" * 64, "fs", "", "diabetes130")
    log.write(
        records("r", "v1", other, [{"race": "Asian"}], [answers[0] | {"prediction_id": "v2"}])
    )
    log.write(records("r", "v1", served, [{}], [{"prediction_id": "norisk", "scored_at": "x"}]))
    # an object after white space, as another writer may have logged it
    spaced = records("r", "v1", served, [{}], [answers[-1] | {"prediction_id": "spaced"}])[0]
    spaced |= {"inputs": ' \n\t{"race": "Asian", "gender": "Male"}', "risk": 0.95}
    with log.engine.begin() as conn:
        conn.execute(predictions.insert(), [spaced])
    table = outcomes_table(log)
    with log.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "encounter_token": f"tok{i:05d}",
                    "readmitted_30d": i % 4 == 0,
                    "recorded_at": None,
                    "ingested_at": "2026-03-01T00:00:00Z",
                    "source_sha256": "0" * 64,
                }
                for i in range(0, 300, 2)
            ],
        )
    log.close()


@pytest.mark.postgres
def test_sqlite_and_postgresql_reads_give_the_same_frame(
    postgres: LocalPostgres, tmp_path: Path
) -> None:
    """PostgreSQL reads through COPY in block ranges and joins the outcomes in Arrow; SQLite
    joins and extracts in SQL. The monitoring run must see the same frame from either."""
    frames = []
    for url in (f"sqlite:///{tmp_path / 'log.sqlite'}", postgres.create_database("same")):
        _log_every_kind_of_row(url)
        log = PredictionLog(url)
        frames.append(logged_predictions(log, "m", 1, POLICY.breakdowns.by))
        if url.startswith("postgresql"):
            with log.engine.connect() as conn:
                blocks = conn.exec_driver_sql(
                    "SELECT pg_relation_size('predictions') / 8192"
                ).scalar_one()
            assert blocks > 10  # every read stream had rows to read
        log.close()
    sqlite, pg = (f.sort_values("risk").reset_index(drop=True) for f in frames)
    pd.testing.assert_frame_equal(sqlite, pg)
    assert len(sqlite) == 302 and sqlite["outcome"].notna().sum() == 136
    assert set(sqlite["race"].dropna()) == {
        "Caucasian", 'Ñandú "quoted"', "comma, and\nnewline", "", "AfricanAmerican", "Asian"
    }  # fmt: skip
    assert sqlite["race"].iloc[-1] == "Asian" and sqlite["sex"].iloc[-1] == "Male"
    assert set(sqlite["admission_source"].dropna()) == {"7", "17"}
    assert sqlite["sex"].isna().sum() == 43 + 1  # not sent, and the request that is a list
    assert sqlite["scored_at"].iloc[1] == pd.Timestamp("2026-01-02T01:00:00.000001Z")
    assert str(sqlite["race"].dtype) == "category"
