"""Batch inference: the champion scores every active user as of a day, back into the warehouse.

Rows stream out of DuckDB as Arrow record batches, are scored a batch at a time with the
model's own ``predict_proba`` (no per-row Python), and stream back in as Arrow. A run is
idempotent per (as-of day, model version): it replaces that slice in one transaction, so a
crashed or repeated run leaves exactly one copy of each prediction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from loopline.settings import Settings
from ml.features import CHURN
from ml.registry import CHAMPION, CHURN_MODEL, RegistryError, alias_version, configure
from ml.train import as_model_input

PREDICTIONS_TABLE = "ml.churn_predictions"
RECOMMENDATIONS_TABLE = "ml.recommendations"

_PREDICTIONS_DDL = f"""
create table if not exists {PREDICTIONS_TABLE} (
    user_id bigint, as_of_date date, churn_probability double, is_high_risk boolean,
    threshold double, model_name varchar, model_version varchar, feature_set_version varchar,
    scored_at timestamp
)
"""


@dataclass(frozen=True)
class ScoreReport:
    """What one batch-scoring run wrote."""

    model_name: str
    model_version: str
    as_of: date
    rows: int
    replaced: int
    table: str


@dataclass(frozen=True)
class ChampionModel:
    """A registered model version loaded for scoring, with what it needs to read features."""

    name: str
    version: str
    model: Any
    feature_columns: list[str]
    numeric_columns: list[str]
    threshold: float
    feature_set_version: str


def load_churn_model(settings: Settings, alias: str = CHAMPION) -> ChampionModel:
    """The churn model an alias points at, with its feature columns and threshold."""
    from ml.registry import load_sklearn_version, version_tags

    client = configure(settings)
    version = alias_version(client, CHURN_MODEL, alias)
    if version is None:
        raise RegistryError(f"{CHURN_MODEL} has no @{alias} yet; run `loopline train` first")
    tags = version_tags(client, CHURN_MODEL, version)
    return ChampionModel(
        name=CHURN_MODEL,
        version=version,
        model=load_sklearn_version(CHURN_MODEL, version),
        feature_columns=json.loads(tags["feature_columns"]),
        numeric_columns=json.loads(tags.get("numeric_columns", "[]")),
        threshold=float(tags.get("threshold", "0.5")),
        feature_set_version=tags.get("feature_set_version", ""),
    )


def score_batches(
    batches: Iterator[pa.RecordBatch], champion: ChampionModel, scored_at: datetime
) -> Iterator[pa.Table]:
    """Score each Arrow batch of feature rows; yield prediction tables (pure, no I/O)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        frame = as_model_input(batch.to_pandas())
        proba = np.asarray(champion.model.predict_proba(frame[champion.feature_columns])[:, 1])
        n = batch.num_rows
        yield pa.table(
            {
                "user_id": batch.column("user_id").cast(pa.int64()),
                "as_of_date": batch.column("as_of_date").cast(pa.date32()),
                "churn_probability": pa.array(proba, pa.float64()),
                "is_high_risk": pa.array(proba >= champion.threshold),
                "threshold": pa.array(np.full(n, champion.threshold), pa.float64()),
                "model_name": pa.array([champion.name] * n, pa.string()),
                "model_version": pa.array([champion.version] * n, pa.string()),
                "feature_set_version": pa.array([champion.feature_set_version] * n, pa.string()),
                "scored_at": pa.array([scored_at] * n, pa.timestamp("us")),
            }
        )


def score_churn(
    settings: Settings,
    as_of: date | None = None,
    alias: str = CHAMPION,
    chunk_rows: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> ScoreReport:
    """Score every user with a feature row on `as_of` (default: the newest day) and store it."""
    import duckdb

    from loopline.duck import warehouse_writer

    champion = load_churn_model(settings, alias)
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    with warehouse_writer(settings) as path:
        con = duckdb.connect(str(path))
        try:
            if as_of is None:
                (as_of,) = con.execute(
                    f"select max(as_of_date) from {CHURN.relation} where feature_set_version = ?",
                    [champion.feature_set_version],
                ).fetchone() or (None,)
                if as_of is None:
                    raise RegistryError(
                        f"no rows of feature set version {champion.feature_set_version!r} "
                        f"(model v{champion.version} was trained on it); rebuild the features"
                    )
            columns = ", ".join(["user_id", "as_of_date", *champion.feature_columns])
            reader = con.cursor()
            reader.execute(
                f"select {columns} from {CHURN.relation} "
                "where as_of_date = ? and feature_set_version = ? order by user_id",
                [as_of, champion.feature_set_version],
            )
            con.execute("create schema if not exists ml")
            con.execute(_PREDICTIONS_DDL)
            con.execute(
                "create or replace temp table _scored as select * from ml.churn_predictions limit 0"
            )
            rows = 0
            for table in score_batches(reader.fetch_record_batch(chunk_rows), champion, scored_at):
                con.register("_chunk", table)
                con.execute("insert into _scored select * from _chunk")
                con.unregister("_chunk")
                rows += table.num_rows
                if progress is not None:
                    progress(table.num_rows)
            reader.close()
            con.execute("begin transaction")
            (replaced,) = con.execute(
                f"select count(*) from {PREDICTIONS_TABLE} where as_of_date = ? and model_name = ? "
                "and model_version = ?",
                [as_of, champion.name, champion.version],
            ).fetchone() or (0,)
            con.execute(
                f"delete from {PREDICTIONS_TABLE} where as_of_date = ? and model_name = ? "
                "and model_version = ?",
                [as_of, champion.name, champion.version],
            )
            con.execute(f"insert into {PREDICTIONS_TABLE} select * from _scored")
            con.execute("commit")
        finally:
            con.close()
    return ScoreReport(
        champion.name, champion.version, as_of, rows, int(replaced), PREDICTIONS_TABLE
    )
