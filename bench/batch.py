"""Batch benchmark: `ml.churn.score.score_churn` end to end against the model's raw `predict_proba`.

A separate DuckDB file holds one as-of day of ``features.fs_churn__user_daily`` replicated
to many rows (distinct user ids, same day and feature set version). `score_churn` is timed
end to end on it (DuckDB -> Arrow chunks -> predict_proba -> DuckDB, commit; the model loaded
once beforehand, its load time measured separately);
the baseline is one ``champion.model.predict_proba`` call on the same rows already in memory
as `ml.churn.model.as_model_input` frames. Both run in this process with the same thread settings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopline.settings import Settings

RELATION = "features.fs_churn__user_daily"
ID_STRIDE = 10_000_000  # replica k of user u gets id u + k * ID_STRIDE


@dataclass(frozen=True)
class BatchConfig:
    rows: int = 500_000
    repeats: int = 5
    chunk_rows: int = 100_000
    whole: bool = True  # also time one predict_proba call over all rows (a diagnostic)


def build_batch_warehouse(
    settings: Settings, feature_set_version: str, rows: int, say: Callable[[str], None] = print
) -> tuple[Path, Any, int]:
    """A DuckDB file with `rows` feature rows of one day; reused when it already matches."""
    import duckdb

    path = settings.data_dir / "batch" / f"warehouse-{rows}.duckdb"
    source = settings.resolved_warehouse_path
    con = duckdb.connect(str(source), read_only=True)
    try:
        found = con.execute(
            f"select max(as_of_date) from {RELATION} where feature_set_version = ?",
            [feature_set_version],
        ).fetchone()
    finally:
        con.close()
    as_of = found[0] if found else None
    if as_of is None:
        raise RuntimeError(f"no rows of feature set version {feature_set_version} in {source}")
    if path.exists():
        con = duckdb.connect(str(path), read_only=True)
        try:
            (have,) = con.execute(
                f"select count(*) from {RELATION} where as_of_date = ? and feature_set_version = ?",
                [as_of, feature_set_version],
            ).fetchone() or (0,)
        except duckdb.Error:
            have = -1
        finally:
            con.close()
        if have == rows:
            say(f"batch: reusing {path} ({rows:,} rows as of {as_of})")
            return path, as_of, rows
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"batch: writing {rows:,} feature rows as of {as_of} to {path}")
    con = duckdb.connect(str(path))
    try:
        con.execute(f"attach '{source}' as src (read_only)")
        con.execute("create schema features")
        con.execute(
            f"create temp table day as select * from src.{RELATION} "
            "where as_of_date = ? and feature_set_version = ?",
            [as_of, feature_set_version],
        )
        (per_day,) = con.execute("select count(*) from day").fetchone() or (0,)
        if not per_day:
            raise RuntimeError(f"no feature rows on {as_of}")
        copies = -(-rows // per_day)
        con.execute(
            f"""
            create table {RELATION} as
            select * replace (day.user_id + copy.range * {ID_STRIDE} as user_id)
            from day cross join range({copies}) as copy
            order by user_id
            limit {rows}
            """
        )
        con.execute("detach src")
    finally:
        con.close()
    return path, as_of, rows


def run_batch(
    settings: Settings, config: BatchConfig, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Rows per second of `score_churn` and of the raw model; raw numbers, no verdicts."""
    import duckdb
    from threadpoolctl import threadpool_info

    from ml.churn.model import as_model_input
    from ml.churn.score import PREDICTIONS_TABLE, load_churn_model, score_churn

    champion = load_churn_model(settings)
    path, as_of, rows = build_batch_warehouse(
        settings, champion.feature_set_version, config.rows, say
    )
    batch_settings = settings.model_copy(update={"warehouse_path": path})

    # the same rows, in memory, in the shape score_churn hands the model
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = ", ".join(["user_id", "as_of_date", *champion.feature_columns])
        table = con.execute(
            f"select {columns} from {RELATION} where as_of_date = ? and feature_set_version = ? "
            "order by user_id",
            [as_of, champion.feature_set_version],
        ).to_arrow_table()
    finally:
        con.close()
    features = champion.feature_columns
    user_ids = table.column("user_id").to_numpy()
    # the baseline's frames: the same chunks score_churn scores, converted before timing
    chunks = [
        as_model_input(table.slice(start, config.chunk_rows).to_pandas())[features]
        for start in range(0, rows, config.chunk_rows)
    ]
    whole = as_model_input(table.to_pandas())[features] if config.whole else None
    del table

    def raw_chunked() -> np.ndarray:
        return np.concatenate([champion.model.predict_proba(c)[:, 1] for c in chunks])

    def raw_whole() -> np.ndarray:
        return np.asarray(champion.model.predict_proba(whole)[:, 1])

    def end_to_end() -> None:
        _drop_predictions(path, PREDICTIONS_TABLE)  # every run scores a fresh day
        # the champion is loaded once, as by a worker scoring many days; its load time is
        # measured on its own (load_churn_model) and reported beside the ratio
        report = score_churn(
            batch_settings, as_of=as_of, chunk_rows=config.chunk_rows, champion=champion
        )
        if report.rows != rows:
            raise RuntimeError(f"score_churn scored {report.rows:,} rows, expected {rows:,}")

    champion.model.predict_proba(chunks[0])  # warm-up (thread pools, lazy imports)
    # interleaved, so each sees the same background load; wall and CPU (all threads) time
    timings: dict[str, list[tuple[float, float]]] = {
        "raw_chunked": [],
        "raw_whole": [],
        "load_churn_model": [],
        "score_churn": [],
    }
    proba = np.empty(0)
    for i in range(config.repeats):
        proba, timing = _timed(raw_chunked)
        timings["raw_chunked"].append(timing)
        timings["load_churn_model"].append(_timed(lambda: load_churn_model(settings))[1])
        timings["score_churn"].append(_timed(end_to_end)[1])
        if whole is not None:
            timings["raw_whole"].append(_timed(raw_whole)[1])
        say(
            f"batch #{i + 1}: raw predict_proba {rows / timings['raw_chunked'][-1][0]:,.0f} "
            f"rows/s, score_churn {rows / timings['score_churn'][-1][0]:,.0f} rows/s end to end"
        )

    check = _check_predictions(path, PREDICTIONS_TABLE, champion.version, user_ids, proba)

    def best(name: str, which: int = 0) -> float:
        return min(t[which] for t in timings[name])

    def median(name: str) -> float:
        return statistics.median(t[0] for t in timings[name])

    out: dict[str, Any] = {
        "rows": rows,
        "as_of": str(as_of),
        "chunk_rows": config.chunk_rows,
        "repeats": config.repeats,
        "model_version": champion.version,
        "timings_wall_cpu_s": timings,
        "raw_rows_per_s": rows / best("raw_chunked"),
        "raw_rows_per_s_median": rows / median("raw_chunked"),
        "raw_rows_per_cpu_s": rows / best("raw_chunked", 1),
        "score_churn_rows_per_s": rows / best("score_churn"),
        "score_churn_rows_per_s_median": rows / median("score_churn"),
        "score_churn_rows_per_cpu_s": rows / best("score_churn", 1),
        "load_churn_model_s": best("load_churn_model"),
        "score_churn_plus_model_load_rows_per_s": rows
        / (best("score_churn") + best("load_churn_model")),
        "verification": check,
        "thread_pools": [
            {k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
            for p in threadpool_info()
        ],
    }
    if timings["raw_whole"]:
        out["raw_whole_rows_per_s"] = rows / best("raw_whole")
        out["raw_whole_rows_per_s_median"] = rows / median("raw_whole")
    return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """The result of `fn` and its (wall, process CPU) seconds; CPU counts every thread."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - wall0, time.process_time() - cpu0)


def _drop_predictions(path: Path, table: str) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        con.execute(f"drop table if exists {table}")
    finally:
        con.close()


def _check_predictions(
    path: Path, table: str, version: str, user_ids: np.ndarray, proba: np.ndarray
) -> dict[str, Any]:
    """The stored predictions are the raw model's, one per user."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        stored = con.execute(
            f"select user_id, churn_probability from {table} where model_version = ? "
            "order by user_id",
            [version],
        ).fetchnumpy()
    finally:
        con.close()
    if len(stored["user_id"]) != len(user_ids) or not np.array_equal(stored["user_id"], user_ids):
        raise RuntimeError("score_churn stored other users than the ones it was given")
    diff = float(np.max(np.abs(stored["churn_probability"] - proba)))
    if diff > 1e-9:
        raise RuntimeError(f"score_churn's probabilities differ from predict_proba by {diff}")
    return {"rows_checked": len(user_ids), "max_abs_probability_difference": diff}
