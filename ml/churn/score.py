"""Batch inference: the champion scores every active user as of a day, back into the warehouse.

Rows stream out of DuckDB as Arrow record batches, are scored a batch at a time with the
model's own ``predict_proba`` (no per-row Python), and stream back in as Arrow; the next
batch is read while the current one is scored. A run is idempotent per (as-of day, model
version): it replaces that slice in one transaction, so a crashed or repeated run leaves
exactly one copy of each prediction.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline.settings import Settings
from loopline.warehouse import PREDICTIONS_TABLE
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
    from loopline.warehouse import ensure, writing

    champion = champion or load_churn_model(settings, alias)
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    with writing(settings) as con:
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
        ensure(con, PREDICTIONS_TABLE)
        slice_ = [as_of, champion.name, champion.version]
        where = "as_of_date = ? and model_name = ? and model_version = ?"
        (replaced,) = con.execute(
            f"select count(*) from {PREDICTIONS_TABLE} where {where}", slice_
        ).fetchone() or (0,)
        columns = ", ".join(["user_id", "as_of_date", *champion.feature_columns])
        reader = con.cursor()
        reader.execute(
            f"select {columns} from {CHURN.relation} "
            "where as_of_date = ? and feature_set_version = ?",
            [as_of, champion.feature_set_version],
        )
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
            "scored_at": scored_at,
        }
        rows = 0
        con.execute("begin transaction")
        try:
            con.execute(f"delete from {PREDICTIONS_TABLE} where {where}", slice_)
            frames = prefetched(_model_inputs(reader.to_arrow_reader(chunk_rows)))
            with _Inserter(con, insert, constants) as inserter:
                for table in predict_chunks(frames, champion):
                    inserter.put(table)
                    rows += table.num_rows
                    if progress is not None:
                        progress(table.num_rows)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        finally:
            reader.close()
    return ScoreReport(
        champion.name, champion.version, as_of, rows, int(replaced), PREDICTIONS_TABLE
    )
