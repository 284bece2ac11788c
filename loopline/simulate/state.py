"""Simulator state: everything needed to continue a run exactly where it stopped.

The state is a handful of parquet files and one JSON file in the state folder. Every
floating-point value round-trips exactly through parquet, and every day draws from its
own random stream (seed, day), so continuing in steps gives the same bytes as one run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopline.simulate.config import SimConfig

# per-user columns (numpy arrays, one element per user, index = user_id - 1)
USER_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "signup_at": "int64",  # epoch seconds, UTC
    "country": "int8",
    "birth_date": "int32",  # days since 1970-01-01
    "channel": "int8",
    "device": "int8",
    "first_name": "int16",
    "last_name": "int16",
    "mu": "float64",  # latent engagement level
    "wander": "float64",  # latent engagement AR(1) term
    "pay_risk": "float64",
    "adopt_day": "int32",  # day the user's app moves to the new version
    "plan_id": "int8",
    "status": "int8",  # 0 active, 1 paused, 2 cancelled
    "sub_started_day": "int32",
    "sub_started_at": "int64",
    "paused_at": "int64",  # -1 when not paused
    "resume_day": "int32",
    "cancelled_at": "int64",  # -1 when not cancelled
    "cancelled_day": "int32",
    "sub_updated_at": "int64",
    "last_fail_day": "int32",
    "last_ticket_day": "int32",
    "retry_day": "int32",  # a failed charge is retried on this day (-1: none)
    "refund_day": "int32",
    "refund_amount": "int64",
    "eta": "float64",  # churn-hazard logit at the end of the last simulated day
    "defect": "int8",  # 0 none, 1 future birth date, 2 null country
}
TASTE_PREFIX = "taste_"
NEVER = -(10**6)


@dataclass
class SimState:
    """The simulated company at the end of `last_day` (a day index; -1 before any day)."""

    config: SimConfig
    last_day: int
    users: dict[str, np.ndarray]
    taste: np.ndarray  # (n_users, n_genres)
    shows: pd.DataFrame
    episodes: pd.DataFrame
    plan_price_factor: float = 1.0
    plan_prices_updated_at: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    pending_events: pd.DataFrame | None = None  # lines not yet arrived

    @property
    def n_users(self) -> int:
        return len(self.users["user_id"])

    # -- persistence ---------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the state atomically (a crash leaves the previous state intact)."""
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            _rmtree(tmp)
        tmp.mkdir(parents=True)
        users = {k: v for k, v in self.users.items()}
        for g in range(self.taste.shape[1]):
            users[f"{TASTE_PREFIX}{g}"] = self.taste[:, g]
        pq.write_table(pa.table(users), tmp / "users.parquet")
        _write_frame(self.shows, tmp / "shows.parquet")
        _write_frame(self.episodes, tmp / "episodes.parquet")
        if self.pending_events is not None:
            _write_frame(self.pending_events, tmp / "pending_events.parquet")
        meta = {
            "config": self.config.model_dump(mode="json"),
            "last_day": self.last_day,
            "plan_price_factor": self.plan_price_factor,
            "plan_prices_updated_at": self.plan_prices_updated_at,
            "counters": self.counters,
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            if old.exists():
                _rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old.exists():
            _rmtree(old)

    @classmethod
    def load(cls, folder: Path) -> SimState | None:
        """The saved state, or None when nothing was simulated yet."""
        meta_path = folder / "state.json"
        if not meta_path.exists():
            return None
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        table = pq.read_table(folder / "users.parquet")
        users = {
            k: table.column(k).to_numpy().astype(dt, copy=True) for k, dt in USER_COLUMNS.items()
        }
        taste_cols = sorted(
            (c for c in table.column_names if c.startswith(TASTE_PREFIX)),
            key=lambda c: int(c[len(TASTE_PREFIX) :]),
        )
        taste = np.column_stack([table.column(c).to_numpy() for c in taste_cols])
        pending = folder / "pending_events.parquet"
        return cls(
            config=SimConfig.model_validate(meta["config"]),
            last_day=int(meta["last_day"]),
            users=users,
            taste=taste,
            shows=pd.read_parquet(folder / "shows.parquet"),
            episodes=pd.read_parquet(folder / "episodes.parquet"),
            plan_price_factor=float(meta["plan_price_factor"]),
            plan_prices_updated_at=int(meta["plan_prices_updated_at"]),
            counters={k: int(v) for k, v in meta["counters"].items()},
            pending_events=pd.read_parquet(pending) if pending.exists() else None,
        )


def empty_users(n: int) -> dict[str, np.ndarray]:
    return {k: np.zeros(n, dtype=dt) for k, dt in USER_COLUMNS.items()}


def append_users(users: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`users` with `new` appended (a scalar in `new` applies to every new user)."""
    n = len(new["user_id"])
    return {
        k: np.concatenate([users[k], np.broadcast_to(np.asarray(new[k]), n).astype(dt)])
        for k, dt in USER_COLUMNS.items()
    }


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
