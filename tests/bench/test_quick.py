"""bench: the quick mode of the rows after scoring writes its results, and every row checked
its two sides' outputs before it reported a ratio. No timings are asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench import run
from bench.demo import parse_phases
from bench.serving import TRIVIAL_BODY, TRIVIAL_PATH, bench_app
from bench.stream import REDIS_URL as STREAM_REDIS
from loopline.settings import Settings
from tests.conftest import require_service
from tests.ml.serving.fakes import FixedModels, churn_model, client_for, store  # noqa: F401

RESULTS_MD = Path(run.__file__).parent / "RESULTS.md"


def quick(data_dir: Path, *skips: str) -> dict:
    before = RESULTS_MD.read_text() if RESULTS_MD.exists() else None
    argv = ["--quick", "--data-dir", str(data_dir), "--skip-serving", "--skip-batch"]
    assert run.main([*argv, *(f"--skip-{row}" for row in skips)]) == 0
    # a quick run never rewrites the committed results
    assert (RESULTS_MD.read_text() if RESULTS_MD.exists() else None) == before
    results = json.loads((data_dir / "results.json").read_text())
    assert (data_dir / "results.md").read_text().startswith("# Benchmark results")
    return results


def test_quick_validation_and_pit_check_equal_outputs_and_write_results(tmp_path):
    results = quick(tmp_path, "drift", "ingest", "demo", "dbt", "stream", "learning")
    validation = results["validation"]
    # the three sides agreed on every check before the ratios (run_validation raises if not)
    assert validation["checks"] == sum(validation["checks_by_kind"].values()) > 50
    assert validation["checks_by_kind"]["unique keys"] == 2
    # the planted faults fail, and only they: both key checks, the share above 1, null rates
    failed = validation["failed_checks"]
    assert sum("compound_key" in k for k in failed) == 2
    assert any("mobile_share_30d, min_value=0.0, max_value=1.0" in k for k in failed)
    assert len(failed) == 5
    for side in ("loopline", "sql", "gx_pandas"):
        assert validation[side]["median_s"] > 0 and validation[side]["peak_rss_mb"] > 0
    assert validation["rows"] == 500 * 20 + 3
    pit = results["pit"]
    assert pit["verification"]["identical"] and pit["verification"]["rows"] == 20_000
    # some entity rows find features and some do not (TTL, unknown keys)
    assert 0 < pit["matched_rows"] < pit["entity_rows"]
    assert pit["ratio_vs_asof"] > 0 and pit["speedup_vs_pandas"] > 0
    assert {c["row"] for c in results["checks"]} == {"validation", "pit"}
    assert len(results["checks"]) == 4
    md = (tmp_path / "results.md").read_text()
    assert "## Row 1: validating" in md and "## Row 2: point-in-time" in md
    assert not list(tmp_path.glob("validation-*")), "the validation row's folder is removed"


def test_quick_drift_and_ingest_check_equal_outputs_and_write_results(tmp_path):
    results = quick(tmp_path, "validation", "pit", "demo", "dbt", "stream", "learning")
    drift = results["drift"]
    gaps = drift["verification"]
    assert gaps["ks_statistic_gap"] <= 1e-9 and gaps["chi2_gap"] <= 1e-9
    assert gaps["pandas_vs_duckdb_gap"] <= 1e-9
    assert (drift["numeric"], drift["categorical"]) == (100, 20)
    assert drift["drifted_features"], "the drifted columns were found"
    assert drift["wide"]["features"] == 1_000
    ingest = results["ingest"]
    assert sum(ingest["rows"].values()) > 0
    assert ingest["loopline"]["rows_per_s"] > 0 and ingest["duckdb"]["rows_per_s"] > 0
    rows = {c["row"] for c in results["checks"]}
    assert rows == {"drift", "ingest"}
    md = (tmp_path / "results.md").read_text()
    assert "## Row 3: drift" in md and "## Row 4b: ingest" in md


def test_quick_stream_lands_exactly_the_produced_events_on_both_paths(tmp_path):
    """Row 5 through Redis db 11: every measurement checked the warehouse's event ids."""
    require_service("Redis", "127.0.0.1", 6379)
    results = quick(tmp_path, "validation", "pit", "drift", "ingest", "demo", "dbt", "learning")
    stream = results["stream"]
    events = stream["config"]["events"]
    for side in ("stream", "files"):
        for one in stream[side]["runs"]:
            assert one["verified"] == {"events": events, "rows": events}
            assert one["events_per_s"] > 0 and one["peak_rss_mb"] > 0
    warmup = stream["config"]["warmup_events"]
    for kind in ("latency", "spike"):
        measured = stream[kind]
        assert measured["verified"]["events"] == warmup + measured["events"]
        assert 0 < measured["latency_s"]["p50"] <= measured["latency_s"]["p99"]
    spike = stream["spike"]
    assert spike["spike_events"] > 0 and spike["drain_s"] >= 0
    assert {c["row"] for c in results["checks"]} == {"stream"} and len(results["checks"]) == 3
    assert "## Row 5: streaming" in (tmp_path / "results.md").read_text()
    assert not list((tmp_path / "stream").iterdir()), "every run's folder is removed"
    import redis

    client = redis.Redis.from_url(STREAM_REDIS)
    try:
        assert not client.keys("loopline-bench:*"), "the bench's stream keys are deleted"
    finally:
        client.close()


def test_the_bench_server_adds_the_constant_route_and_the_api_does_not_have_it(tmp_path, store):  # noqa: F811
    """Row 0's ceiling: the constant route lives in the bench's app only, beside the real one."""
    models = FixedModels(churn_model("2", ["minutes", "tickets"], "fsb"), None)
    settings = Settings(data_dir=tmp_path)
    bench = bench_app(settings, poll_seconds=60, store=store, models=models)
    with TestClient(bench) as client:
        constant = client.post(TRIVIAL_PATH, json={"user_id": 1})
        assert constant.status_code == 200 and constant.json() == TRIVIAL_BODY
        assert client.post("/v1/churn/score", json={"user_id": 1}).json()["model"]["version"] == "2"
        assert TRIVIAL_PATH not in client.get("/openapi.json").json()["paths"]
    with client_for(tmp_path, store, models) as client:
        assert client.post(TRIVIAL_PATH, json={"user_id": 1}).status_code == 404


@pytest.mark.slow
def test_quick_loop_reports_phases_and_compares_incremental_with_full_refresh(tmp_path):
    results = quick(tmp_path, "validation", "pit", "drift", "ingest", "stream", "learning")
    demo = results["demo"]
    names = [p["phase"] for p in demo["phases"]]
    assert {"simulate", "ingest", "build", "train", "demo"} <= set(names)
    assert demo["peak_rss_mb"] > 0
    dbt = results["dbt"]
    assert dbt["models"], "the incremental models were fingerprinted"
    assert all(v["rows"] > 0 for v in dbt["models"].values())
    # a ratio only over equal outputs
    assert ("ratio" in dbt) == dbt["equal"]
    assert not list(tmp_path.glob("loop-*")), "the demo's temporary folder is removed"


def test_quick_learning_curve_judges_the_model_against_the_truth_on_the_same_rows(tmp_path):
    results = quick(tmp_path, "validation", "pit", "drift", "ingest", "demo", "dbt", "stream")
    (point,) = results["learning"]["points"]
    assert point["users"] == 300
    for side in ("after", "before"):
        measured = point[side]
        # every holdout row has its true probability, and the truth beats a coin and the model
        assert measured["truth_rows"] == measured["holdout_rows"] > 0
        assert 0.5 < measured["bayes_auc"] <= 1 and 0 <= measured["roc_auc"] <= 1
        assert measured["ratio"] == measured["roc_auc"] / measured["bayes_auc"]
        assert (
            0 <= measured["ece"] <= 1 and 0 <= measured["bayes_brier"] <= measured["brier"] + 0.05
        )
        assert 0 <= measured["baseline_auc"] <= 1
    assert 0.5 < point["after"]["observable_ceiling_auc"] <= 1
    assert 0.5 < point["after"]["filter_ceiling_auc"] <= 1
    # "before" trains without the added columns, so on fewer features
    assert point["before"]["features"] < point["after"]["features"]
    assert {c["row"] for c in results["checks"]} == {"learning"}
    md = (tmp_path / "results.md").read_text()
    assert "## Row 7: churn model quality" in md and "| 300 |" in md
    assert "ceiling: filter (ratio)" in md
    assert (tmp_path / "learning" / "learning-u300-d75" / "ingested.json").exists()


def test_phase_lines_are_parsed_with_their_seconds():
    stderr = "\n".join(
        [
            "✓ prefect    temporary server on port 50117 (17.3 s)",
            "some log line (3.0 s)",
            "✓ build      39 models, 220 tests: 259 passed (1 m 02 s)",
            "  quarantined 139 records",
            "! score      no churn @champion yet (none passed the gate): skipped",
        ]
    )
    phases = parse_phases(stderr)
    assert [(p["phase"], p["seconds"], p["ok"]) for p in phases] == [
        ("prefect", 17.3, True),
        ("build", 62, True),
        ("score", None, False),
    ]
    assert phases[1]["summary"] == "39 models, 220 tests: 259 passed"


def test_a_run_keeps_the_sections_of_the_rows_it_skipped():
    earlier = run.markdown(
        {
            "date": "then",
            "quick": False,
            "machine": run.machine(),
            "loadavg_before": [0, 0, 0],
            "loadavg_after": [0, 0, 0],
            "checks": [],
            "demo": {"scale": "demo", "wall_s": 90.0, "peak_rss_mb": 1700.0, "phases": []},
        }
    )
    carried = run.sections_of(earlier)
    assert list(carried) == ["demo"]
    now = run.markdown(
        {
            "date": "now",
            "quick": False,
            "machine": run.machine(),
            "loadavg_before": [0, 0, 0],
            "loadavg_after": [0, 0, 0],
            "checks": [],
        },
        carried=carried,
    )
    assert "Wall 90 s" in now and "- date: then" in now


def test_a_failing_row_is_recorded_and_the_results_still_written(tmp_path, monkeypatch):
    import bench.drift

    def broken(*args, **kwargs):
        raise AssertionError("statistics differ from scipy")

    monkeypatch.setattr(bench.drift, "run_drift", broken)
    argv = ["--quick", "--data-dir", str(tmp_path), "--skip-serving", "--skip-batch"]
    skips = ["--skip-validation", "--skip-pit", "--skip-ingest", "--skip-demo", "--skip-dbt"]
    skips.append("--skip-stream")
    skips.append("--skip-learning")
    assert run.main([*argv, *skips]) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == {"drift": "AssertionError: statistics differ from scipy"}
    assert "drift" not in results and results["checks"] == []
    assert "Row 3 failed" in (tmp_path / "results.md").read_text()


def _dbt_result(scale: str, incremental_s: float, full_s: float, **extra) -> dict:
    return {
        "scale": scale,
        "one_more_day": "simulated 1 day",
        "ingest_s": 3.0,
        "noop": {"runs": 5, "median_s": 10.0, "peak_rss_mb": 200.0},
        "incremental": {"seconds": incremental_s, "peak_rss_mb": 400.0},
        "full_refresh": {"seconds": full_s, "peak_rss_mb": 900.0},
        "models": {"features.fs_x": {"rows": 10, "checksum": "1"}},
        "equal": True,
        "different": {},
        "ratio": incremental_s / full_s,
        "ratio_without_startup": (incremental_s - 10) / (full_s - 10),
        "node_seconds": {"incremental": [("model.a", 1.0)], "full_refresh": [("model.a", 5.0)]},
        **extra,
    }


def test_the_dbt_target_is_judged_at_the_large_scale_and_the_demo_scale_is_reported_beside():
    base = {"date": "now", "quick": False, "machine": run.machine(), "loadavg": {"dbt": [[0], [0]]}}
    demo = _dbt_result("demo", 54.0, 130.0)
    large = _dbt_result(
        "large",
        60.0,
        900.0,
        prepared={"steps_s": {"simulate": 100.0}, "simulated": "180 days", "reused": True},
    )
    both = run.checks({**base, "dbt": demo, "dbt_large": large})
    assert [(c.name, c.passed) for c in both] == [("dbt: incremental / full refresh (large)", True)]
    # without the large company the demo scale is what is judged (and fails here)
    (alone,) = run.checks({**base, "dbt": demo})
    assert alone.name.endswith("(demo)") and not alone.passed
    md = run.markdown({**base, "dbt": demo, "dbt_large": large, "checks": []})
    assert md.index("### At `--scale large`") < md.index("### At `--scale demo`")
    assert "reused from an earlier run" in md and "On the folder the demo row filled" in md


def test_only_runs_the_named_rows():
    args = run.parse_args(["--only", "validation", "--only", "drift"])
    ran = [row for row in run.SKIPPABLE if not getattr(args, f"skip_{row}")]
    assert ran == ["validation", "drift"]
    everything = run.parse_args([])
    assert not any(getattr(everything, f"skip_{row}") for row in run.SKIPPABLE)


def test_rebuilding_the_scoring_company_keeps_the_other_rows_kept_companies(tmp_path):
    from bench.fixture import clear_for_rebuild

    for kept in ("results.json", "learning/learning-u300-d75/x", "dbt-large/bench-prepared.json"):
        (tmp_path / kept).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / kept).write_text("kept")
    for gone in ("warehouse/loopline.duckdb", "mlruns/1/meta.yaml", "online.sqlite"):
        (tmp_path / gone).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / gone).write_text("the old company")
    clear_for_rebuild(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbt-large", "learning", "results.json"]
    assert (tmp_path / "dbt-large" / "bench-prepared.json").read_text() == "kept"


def test_the_dbt_row_refuses_before_building_when_the_disk_cannot_hold_the_full_refresh(tmp_path):
    from bench.dbt_build import check_room

    company = tmp_path / "company"
    (company / "warehouse").mkdir(parents=True)
    (company / "warehouse" / "loopline.duckdb").write_bytes(b"\0" * 1_000_000)
    (company / "landing").mkdir()  # not rewritten by a build: not counted
    (company / "landing" / "big.ndjson").write_bytes(b"\0" * 50_000_000)
    check_room(company)  # 1 MB needed: there is room
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(RuntimeError, match=r"needs about .* GB free .* 0\.0 GB warehouse"):
        check_room(company, factor=2 * free / 1_000_000)
