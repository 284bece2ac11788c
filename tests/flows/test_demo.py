"""The demo flow runs under a real (temporary) Prefect server and reports where to look."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.demo import DemoParams, loopline_demo
from loopline.settings import get_settings

PHASES = (
    "simulate", "ingest", "build", "online", "train", "score", "recommend", "validate",
    "monitor", "demo",
)  # fmt: skip
PREFECT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| (DEBUG|INFO) ")


def test_demo_flow_runs_the_line_and_the_loop(prefect_harness, tmp_path, monkeypatch, capfd):
    """Simulate 45 days, build, train both models, score: everything lands where it says,
    and the terminal shows a phase line per step, not dbt's or MLflow's own output."""
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # as from the repo root: paths are shown relative to it
    # one setting per candidate keeps this test short; the small company is too small for
    # the default user-disjoint holdout to show signal, so this splits by time only
    config = tmp_path / "ml.yaml"
    config.write_text(
        "churn:\n  train:\n    entity: null\n    logreg_grid: {C: [1.0]}\n"
        "    hist_gb_grid: {learning_rate: [0.1], max_leaf_nodes: [15]}\n"
    )
    monkeypatch.setenv("LOOPLINE_ML_CONFIG", str(config))
    tmp_path = tmp_path / "data"
    get_settings.cache_clear()
    capfd.readouterr()
    try:
        where = loopline_demo(DemoParams(scale="small"))
    finally:
        get_settings.cache_clear()
    out, err = capfd.readouterr()
    # Prefect's own INFO lines are silenced by `make demo` (PREFECT_LOGGING_*): the rest is ours
    ours = [line for line in (out + err).splitlines() if not PREFECT_LINE.match(line)]
    # one line per step; validation adds one per suite (expectations.run)
    steps = [line for line in ours if line.split()[1:2] != ["validate"]]
    assert len(steps) <= 24, "\n".join(ours)
    shown = [line.split()[1] for line in ours if line[:1] in "✓!"]
    assert [p for p in PHASES if p in shown] == list(PHASES), "\n".join(ours)
    assert shown.count("train") >= 2  # the monitor may retrain the churn model
    for noise in ("UnicodeDecodeError", "Traceback", "Running with dbt", "OK created", '{"'):
        assert noise not in out + err
    # expected rejects: counted in the warehouse, reported under the build line
    assert re.search(r"^  quarantined [\d,]+ records, rejected 1 file \(see ", err, re.M)
    assert all(len(f"  {name:<12}  {value}") <= 80 for name, value in where.items()), where
    manifest = json.loads((tmp_path / "sources" / "_manifest" / "defects.json").read_text())
    assert manifest["through"] == "2026-02-14"
    assert where["simulated"].startswith("2026-01-01 .. 2026-02-14 in ")
    assert (tmp_path / "sources" / "oltp.sqlite").exists()
    # the line ran inside the demo: the warehouse holds built marts
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse" / "loopline.duckdb"))
    try:
        (users,) = con.execute("select count(*) from core.dim_users").fetchone()
        (scored,) = con.execute("select count(*) from ml.churn_predictions").fetchone()
        (recommended,) = con.execute(
            "select count(distinct user_id) from ml.recommendations"
        ).fetchone()
        decisions = con.execute("select model_name, action from ml.model_decisions").fetchall()
        (monitor_runs,) = con.execute("select count(*) from monitoring.monitor_runs").fetchone()
        retrains = (
            con.execute(
                "select count(*) filter (where action = 'retrained') from monitoring.retrain_triggers"
            ).fetchone()[0]
            if con.execute(
                "select count(*) from information_schema.tables where table_name = 'retrain_triggers'"
            ).fetchone()[0]
            else 0
        )
    finally:
        con.close()
    assert users > 250
    # the loop ran too: both models registered and promoted, every active user scored
    assert decisions[:2] == [
        ("loopline-churn", "promoted"),
        ("loopline-recommender", "promoted"),
    ]
    # then validation and the monitor, which retrains the churn model when it finds drift
    # (this 45-day company's training days all fall in the 30-day warm-up: it does)
    assert len(decisions) == 2 + retrains and monitor_runs == 1
    assert re.fullmatch(
        r"\d+ prediction suites, 0 failed \(marts: line.s audit\)", where["validation"]
    )
    assert where["monitoring"].startswith("drift in ")
    assert Path(where["drift report"]).exists()
    assert scored > 250 and recommended > 250
    assert where["churn model"].startswith("v1 ROC AUC") and "Bayes-optimal" in where["churn model"]
    assert "popularity" in where["recommender"]
    assert where["warehouse"] == "data/warehouse/loopline.duckdb"
    assert where["churn report"] == "data/reports/churn/v1/evaluation.html"
    assert Path(where["dbt log"]).exists()  # relative to the working folder, as shown
    assert (tmp_path / "reports" / "churn" / "v1" / "evaluation.html").exists()


def test_demo_params_reject_an_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        DemoParams(scale="huge")
