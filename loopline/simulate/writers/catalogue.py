"""The catalogue vendor's database: the parquet files its API (``vendor_api``) serves."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from loopline.simulate.state import SimState


def write_catalogue(state: SimState, folder: Path) -> None:
    """The vendor's catalogue database, as the parquet files its API serves."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    shows = state.shows
    table = pa.table(
        {
            "show_id": pa.array(shows["show_id"].tolist(), pa.string()),
            "title": pa.array(shows["title"].tolist(), pa.string()),
            "genres": pa.array([list(g) for g in shows["genres"]], pa.list_(pa.string())),
            "cast": pa.array(
                [[dict(c) for c in cast] for cast in shows["cast"]],
                pa.list_(
                    pa.struct(
                        [("name", pa.string()), ("role", pa.string()), ("character", pa.string())]
                    )
                ),
            ),
            "release_date": pa.array(
                pd.to_datetime(shows["release_date"]).dt.date.tolist(), pa.date32()
            ),
            "maturity_rating": pa.array(shows["maturity_rating"].tolist(), pa.string()),
            "language": pa.array(shows["language"].tolist(), pa.string()),
            "description": pa.array(shows["description"].tolist(), pa.string()),
            "updated_at": pa.array(
                shows["updated_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
        }
    )
    eps = state.episodes
    episodes = pa.table(
        {
            "episode_id": pa.array(eps["episode_id"].tolist(), pa.string()),
            "show_id": pa.array(eps["show_id"].tolist(), pa.string()),
            "season": pa.array(eps["season"].to_numpy(), pa.int32()),
            "episode_number": pa.array(eps["episode_number"].to_numpy(), pa.int32()),
            "title": pa.array(eps["title"].tolist(), pa.string()),
            "duration_s": pa.array(eps["duration_s"].to_numpy(), pa.int32()),
            "released_at": pa.array(
                eps["released_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "updated_at": pa.array(
                eps["updated_at"].to_numpy() * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
        }
    )
    for name, tab in (("shows.parquet", table), ("episodes.parquet", episodes)):
        tmp = folder / f".{name}.tmp"
        pq.write_table(tab, tmp)
        os.replace(tmp, folder / name)
