"""Batch inference: the champion scores every active user as of a day, back into the warehouse.

Rows stream out of DuckDB as Arrow record batches, are scored a batch at a time with the
model's own ``predict_proba`` (no per-row Python), and stream back in as Arrow; the next
batch is read while the current one is scored. A run is idempotent per (as-of day, model
version): it replaces that slice in one transaction, so a crashed or repeated run leaves
exactly one copy of each prediction.

The same day can be scored partitioned (`stage_features`, `score_part`, `store_predictions`):
the features are staged as parquet parts by user, each part is scored on its own (on Dask
workers, flows/score.py), and the predictions are written once, with the same replace.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline.settings import Settings
from loopline.warehouse import PREDICTIONS_TABLE, ensure
from ml.churn.model import as_model_input
from ml.features.definitions import CHURN
from ml.registry import CHAMPION, CHURN_MODEL, RegistryError, alias_version, configure

T = TypeVar("T")


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


def predict_chunks(
    frames: Iterator[tuple[pa.RecordBatch, pd.DataFrame]], champion: ChampionModel
) -> Iterator[pa.Table]:
    """Score each (keys batch, model-input frame) pair; yield (user_id, as_of_date, p) tables."""
    for keys, frame in frames:
        proba = np.asarray(champion.model.predict_proba(frame[champion.feature_columns])[:, 1])
        yield pa.table(
            {
                "user_id": keys.column("user_id").cast(pa.int64()),
                "as_of_date": keys.column("as_of_date").cast(pa.date32()),
                "churn_probability": pa.array(proba, pa.float64()),
            }
        )


def _model_inputs(
    batches: Iterator[pa.RecordBatch],
) -> Iterator[tuple[pa.RecordBatch, pd.DataFrame]]:
    for batch in batches:
        if batch.num_rows:
            yield batch, as_model_input(batch.to_pandas())


_DONE = object()


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced by a background thread up to `depth` ahead (exceptions re-raised).

    Reading from DuckDB and converting to pandas mostly release the GIL, so the next chunk
    is prepared while the model scores this one.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            slots.put(exc)

    thread = threading.Thread(target=produce, name="loopline-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _Inserter:
    """Inserts scored chunks on a background thread, one at a time, in order.

    DuckDB releases the GIL while it inserts, so the next chunk is scored meanwhile. The
    connection is used by this thread only until `__exit__` has waited for the last insert;
    an insert's error is re-raised there (or at the next `put`).
    """

    def __init__(self, con: Any, sql: str, params: dict[str, Any]) -> None:
        self.con, self.sql, self.params = con, sql, params
        self._pending: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loopline-insert", daemon=True)

    def __enter__(self) -> _Inserter:
        self._thread.start()
        return self

    def put(self, table: pa.Table) -> None:
        """Queue one chunk (waits while the previous one is still waiting to be inserted)."""
        if self._error is not None:
            raise self._error
        self._pending.put(table)

    def _run(self) -> None:
        while (table := self._pending.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; the error surfaces in the caller
            try:
                self.con.register("_chunk", table)
                self.con.execute(self.sql, self.params)
                self.con.unregister("_chunk")
            except BaseException as exc:
                self._error = exc

    def __exit__(self, *exc_info: object) -> None:
        self._pending.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


def _newest_day(con: Any, champion: ChampionModel) -> date:
    """The newest as-of day with features in the version `champion` was trained on."""
    (as_of,) = con.execute(
        f"select max(as_of_date) from {CHURN.relation} where feature_set_version = ?",
        [champion.feature_set_version],
    ).fetchone() or (None,)
    if as_of is None:
        raise RegistryError(
            f"no rows of feature set version {champion.feature_set_version!r} "
            f"(model v{champion.version} was trained on it); rebuild the features"
        )
    return as_of


def _feature_query(champion: ChampionModel) -> str:
    """The day's feature rows the model reads (parameters: as-of day, feature set version)."""
    columns = ", ".join(["user_id", "as_of_date", *champion.feature_columns])
    return (
        f"select {columns} from {CHURN.relation} where as_of_date = ? and feature_set_version = ?"
    )


def _replace_slice(
    con: Any,
    champion: ChampionModel,
    as_of: date,
    scored: Callable[[], Iterator[pa.Table]],
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Replace the (as_of, model version) slice with `scored()`'s tables in one transaction.

    Chunks are inserted as they come (`_Inserter`); a failure rolls back to the previous
    slice. Returns (rows written, rows replaced).
    """
    ensure(con, PREDICTIONS_TABLE)
    slice_ = [as_of, champion.name, champion.version]
    where = "as_of_date = ? and model_name = ? and model_version = ?"
    (replaced,) = con.execute(
        f"select count(*) from {PREDICTIONS_TABLE} where {where}", slice_
    ).fetchone() or (0,)
    # constants travel as parameters, not as n-row Arrow columns
    insert = (
        f"insert into {PREDICTIONS_TABLE} select user_id, as_of_date, churn_probability, "
        "churn_probability >= $threshold, $threshold, $name, $version, $fs_version, "
        "$scored_at from _chunk"
    )
    constants = {
        "threshold": champion.threshold,
        "name": champion.name,
        "version": champion.version,
        "fs_version": champion.feature_set_version,
        "scored_at": datetime.now(UTC).replace(tzinfo=None),
    }
    rows = 0
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {PREDICTIONS_TABLE} where {where}", slice_)
        with _Inserter(con, insert, constants) as inserter:
            for table in scored():
                inserter.put(table)
                rows += table.num_rows
                if progress is not None:
                    progress(table.num_rows)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return rows, int(replaced)


def score_churn(
    settings: Settings,
    as_of: date | None = None,
    alias: str = CHAMPION,
    chunk_rows: int = 100_000,
    progress: Callable[[int], None] | None = None,
    champion: ChampionModel | None = None,
) -> ScoreReport:
    """Score every user with a feature row on `as_of` (default: the newest day) and store it.

    One transaction replaces the (as_of, model version) slice: chunks are inserted as they
    are scored, and a failure rolls back to the previous slice. Reading the next chunk and
    writing the last one overlap with scoring this one (`prefetched`, `_Inserter`). A caller
    scoring several days passes the loaded `champion` to load it once.
    """
    from loopline.warehouse import writing

    champion = champion or load_churn_model(settings, alias)
    with writing(settings) as con:
        day = as_of or _newest_day(con, champion)
        reader = con.cursor()
        try:
            reader.execute(_feature_query(champion), [day, champion.feature_set_version])
            rows, replaced = _replace_slice(
                con,
                champion,
                day,
                lambda: predict_chunks(
                    prefetched(_model_inputs(reader.to_arrow_reader(chunk_rows))), champion
                ),
                progress,
            )
        finally:
            reader.close()
    return ScoreReport(champion.name, champion.version, day, rows, replaced, PREDICTIONS_TABLE)


# -- partitioned scoring: the day's features staged as parquet parts, scored anywhere ----------
#
# DuckDB lets one process write a file, and no process read it while one writes; a Dask
# worker on another host cannot open it at all. So the warehouse is read once, here, into
# one parquet part per partition of users; workers score parts into parquet parts of their
# own (`score_part`, no warehouse), and the predictions are written once, as one
# transaction, by the process that staged them (`store_predictions`).


@dataclass(frozen=True)
class StagedDay:
    """One as-of day's feature rows, split by user into parquet parts (one folder each)."""

    as_of: date
    rows: int
    parts: list[Path]


def stage_features(
    settings: Settings, champion: ChampionModel, as_of: date | None, partitions: int, folder: Path
) -> StagedDay:
    """Write the day's feature rows (default: the newest day) as up to `partitions` parts.

    A user lands in part ``hash(user_id) % partitions``; a part with no users is not written.
    """
    from loopline.warehouse import reading

    if partitions < 1:
        raise ValueError(f"partitions={partitions}: score with at least one partition")
    folder.mkdir(parents=True, exist_ok=True)
    target = str(folder).replace("'", "''")
    with reading(settings) as con:
        day = as_of or _newest_day(con, champion)
        staged = con.execute(
            f"copy (select *, hash(user_id) % {int(partitions)} as part "
            f"from ({_feature_query(champion)})) "
            f"to '{target}' (format parquet, partition_by (part))",
            [day, champion.feature_set_version],
        ).fetchone()
    parts = sorted(folder.glob("part=*"), key=lambda path: int(path.name.split("=")[1]))
    return StagedDay(day, int(staged[0]) if staged else 0, parts)


def score_part(
    champion: ChampionModel, features: Path, out: Path, chunk_rows: int = 100_000
) -> int:
    """Score one staged part (a folder of parquet files) into the parquet file `out`; its rows.

    The same chunked `predict_chunks` as `score_churn`, so a user's probability does not
    depend on the partition it was scored in.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    source = ds.dataset(features, format="parquet")
    columns = ["user_id", "as_of_date", *champion.feature_columns]
    batches = source.to_batches(columns=columns, batch_size=chunk_rows)
    rows = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [("user_id", pa.int64()), ("as_of_date", pa.date32()), ("churn_probability", pa.float64())]
    )
    with pq.ParquetWriter(out, schema) as writer:
        for table in predict_chunks(_model_inputs(batches), champion):
            writer.write_table(table)
            rows += table.num_rows
    return rows


def store_predictions(
    settings: Settings,
    champion: ChampionModel,
    as_of: date,
    parts: list[Path],
    progress: Callable[[int], None] | None = None,
) -> ScoreReport:
    """Replace the (as_of, model version) slice with the scored parts, in one transaction."""
    import pyarrow.parquet as pq

    from loopline.warehouse import writing

    def scored() -> Iterator[pa.Table]:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches():
                yield pa.Table.from_batches([batch])

    with writing(settings) as con:
        rows, replaced = _replace_slice(con, champion, as_of, scored, progress)
    return ScoreReport(champion.name, champion.version, as_of, rows, replaced, PREDICTIONS_TABLE)
