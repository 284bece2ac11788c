"""Batch scoring's pure parts: the prefetching pipeline and the chunk scorer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ml.churn.score import ChampionModel, predict_chunks, prefetched


def test_prefetched_keeps_order_and_runs_ahead_in_another_thread() -> None:
    producers: set[str] = set()

    def items() -> Iterator[int]:
        for i in range(50):
            producers.add(threading.current_thread().name)
            yield i

    assert list(prefetched(items(), depth=3)) == list(range(50))
    assert producers == {"loopline-prefetch"}


def test_prefetched_reraises_the_producers_error_after_what_it_made() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    got: list[int] = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_stops_early() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    stream = prefetched(endless())
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the producer; hangs here if it did not stop
    assert not any(t.name == "loopline-prefetch" for t in threading.enumerate())


class _Half:
    """A stand-in model whose probability is half the first feature (checks plumbing only)."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame["x"].to_numpy() / 2
        return np.column_stack([1 - p, p])


def test_predict_chunks_keeps_keys_aligned_with_their_scores() -> None:
    champion = ChampionModel("m", "7", _Half(), ["x"], ["x"], 0.5, "fs1")
    keys = pa.record_batch(
        {"user_id": pa.array([3, 1, 2], pa.int32()), "as_of_date": pa.array(["2026-01-02"] * 3)}
    )
    keys = keys.set_column(1, "as_of_date", keys.column(1).cast(pa.date32()))
    frame = pd.DataFrame({"x": [0.2, 0.8, 0.4]})
    (table,) = list(predict_chunks(iter([(keys, frame)]), champion))
    assert table.column("user_id").to_pylist() == [3, 1, 2]
    assert table.column("churn_probability").to_pylist() == pytest.approx([0.1, 0.4, 0.2])
    assert table.schema.field("user_id").type == pa.int64()
