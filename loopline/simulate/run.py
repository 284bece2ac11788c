"""`loopline simulate`: run (or continue) the simulated company up to a date."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline.progress import Tracker, phase, track
from loopline.settings import Settings
from loopline.simulate import model as m
from loopline.simulate.config import Scenario, SimConfig
from loopline.simulate.engine import day_epoch, initial_state, simulate_day
from loopline.simulate.state import SimState
from loopline.simulate.writers.catalogue import write_catalogue
from loopline.simulate.writers.events import event_lines, lines_table, write_event_files
from loopline.simulate.writers.oltp import USER_DEFECTS, write_oltp
from loopline.simulate.writers.payments import write_payments
from loopline.simulate.writers.tickets import write_tickets

CHUNK_DAYS = 14  # days whose events are expanded and written together (bounds memory)


class SimulationError(RuntimeError):
    """A simulate call that cannot go ahead, with the reason and the fix."""


@dataclass(frozen=True)
class SimReport:
    """What one simulate call did."""

    first_day: date | None
    last_day: date
    days: int
    events_written: int
    payments_written: int
    tickets_written: int
    users: int
    seconds: float
    bayes_auc: float | None
    company_start: date  # the simulated company's first day

    @property
    def events_per_second(self) -> float:
        return self.events_written / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """One line: the days simulated and the records they produced (fits 80 columns)."""
        if not self.days:
            return f"nothing to do: already simulated through {self.last_day}"
        return (
            f"{self.days} days: {self.events_written:,} events, "
            f"{self.payments_written:,} payments, {self.tickets_written:,} tickets"
        )


def manifest_dir(settings: Settings) -> Path:
    return settings.sources_dir / "_manifest"


def truth_dir(settings: Settings) -> Path:
    return settings.sources_dir / "_truth"


def catalogue_dir(settings: Settings) -> Path:
    return settings.sources_dir / "catalogue"


def load_state(settings: Settings) -> SimState | None:
    return SimState.load(settings.sim_state_dir)


def simulate_company(
    settings: Settings,
    new_company: Scenario | None = None,
    until: date | None = None,
    days: int | None = None,
    progress: bool = True,
) -> SimReport:
    """The simulate step (`loopline simulate` and the demo): start a company or continue it.

    With nothing simulated yet, starts the company `new_company` describes (defaults:
    LOOPLINE_SIM_SCALE, LOOPLINE_SIM_SEED) and simulates it up to `until`, or for `days`
    days, or for its scale's default length. Otherwise continues the stored company up
    to `until`, or `days` more days; with neither it has nothing to do. `new_company` is
    used only for a first run.
    """
    state = load_state(settings)
    config = None
    if state is None:
        try:
            config, default_days = (new_company or Scenario()).config(
                settings.sim_scale, settings.sim_seed, settings.sim_start
            )
        except (ValueError, KeyError) as exc:
            raise SimulationError(f"bad scenario options: {exc}") from exc
        until = until or config.date_of((days or default_days) - 1)
    elif until is None:
        until = state.config.date_of(state.last_day + (days or 0))
    return simulate(settings, until, config, progress)


def simulate(
    settings: Settings,
    until: date,
    config: SimConfig | None = None,
    progress: bool = True,
) -> SimReport:
    """Simulate from where the last run stopped (or from the config's start) up to `until`.

    `config` is only used by the first run; later runs continue with the stored one and
    refuse a different config rather than silently mixing two companies. Reports one phase
    line; `progress=False` hides the bar over the days.
    """
    started = time.perf_counter()
    state = load_state(settings)
    first_run = state is None
    if state is None:
        state = initial_state(config or SimConfig())
    elif config is not None and config != state.config:
        raise SimulationError(
            f"{settings.sim_state_dir} holds a simulation with another configuration; "
            "continue it without scenario options, or start over with `loopline simulate --reset`"
        )
    cfg = state.config
    last = cfg.day_index(until)
    first = state.last_day + 1
    if last < first:
        report = SimReport(
            None,
            cfg.date_of(state.last_day),
            0,
            0,
            0,
            0,
            state.n_users,
            0.0,
            _bayes_auc(settings, state),
            cfg.start,
        )
        phase("simulate", report.summary())
        return report
    since = 0 if first_run else day_epoch(cfg, first)
    landing = settings.landing_dir
    pending = lines_table(state.pending_events)
    defects: list[pd.DataFrame] = []
    truth: list[pd.DataFrame] = []
    written = {"events": 0, "payments": 0, "tickets": 0}
    with _days_bar(progress, last - first + 1) as bar:
        for chunk_start in range(first, last + 1, CHUNK_DAYS):
            chunk_end = min(last, chunk_start + CHUNK_DAYS - 1)
            sessions = []
            for day in range(chunk_start, chunk_end + 1):
                out = simulate_day(state, day)
                pay_defects, pay_rows = write_payments(state, landing, day, out.payments)
                defects.append(pay_defects)
                defects.append(write_tickets(state, landing, day, out.tickets))
                written["payments"] += pay_rows
                written["tickets"] += len(out.tickets)
                sessions.append(out.sessions)
                truth.append(out.truth)
                bar.advance()
            lines = event_lines(state, pd.concat(sessions, ignore_index=True))
            lines = pa.concat_tables([pending, lines]) if pending.num_rows else lines
            pending, event_defects, n = write_event_files(
                landing, lines, day_epoch(cfg, chunk_end + 1) * 1000
            )
            defects.append(event_defects)
            written["events"] += n
            elapsed = time.perf_counter() - started
            bar.set_description(
                f"simulating days ({written['events'] / max(elapsed, 1e-9):,.0f} events/s)"
            )
    write_catalogue(state, catalogue_dir(settings))
    write_oltp(state, settings.resolved_source_db_url, since)
    _append_parquet(
        truth_dir(settings) / "churn_truth.parquet", pd.concat(truth, ignore_index=True)
    )
    _write_manifest(settings, state, pd.concat(defects, ignore_index=True), written)
    _write_tastes(settings, state)
    state.pending_events = pending.to_pandas()
    state.save(settings.sim_state_dir)
    auc = _bayes_auc(settings, state)
    _write_summary(settings, state, auc)
    write_churn_reference(settings, state)
    report = SimReport(
        first_day=cfg.date_of(first),
        last_day=until,
        days=last - first + 1,
        events_written=written["events"],
        payments_written=written["payments"],
        tickets_written=written["tickets"],
        users=state.n_users,
        seconds=time.perf_counter() - started,
        bayes_auc=auc,
        company_start=cfg.start,
    )
    phase("simulate", report.summary(), report.seconds)
    return report


@contextmanager
def _days_bar(show: bool, days: int) -> Iterator[Tracker]:
    """A bar over the simulated days (when not shown, a tracker without a total: silent)."""
    if show:
        with track("simulating days", total=days, unit="days") as bar:
            yield bar
    else:
        yield Tracker("simulating days", None, "days")


def _append_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def _write_manifest(
    settings: Settings, state: SimState, new: pd.DataFrame, written: dict[str, int]
) -> None:
    """defects.parquet (one row per injected defect) and defects.json (counts), cumulative."""
    folder = manifest_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "defects.parquet"
    old = pd.read_parquet(path) if path.exists() else None
    files = new[new["source"] != "users"]
    frame = pd.concat(
        [old[old["source"] != "users"], files] if old is not None else [files], ignore_index=True
    )
    u = state.users
    bad_users = np.flatnonzero(u["defect"] > 0)
    users = pd.DataFrame(
        {
            "source": "users",
            "kind": [USER_DEFECTS[int(k)] for k in u["defect"][bad_users]],
            "record_id": u["user_id"][bad_users].astype(str),
            "file": "oltp:users",
        }
    )
    frame = pd.concat([frame, users], ignore_index=True)
    frame = frame.sort_values(["source", "kind", "file", "record_id"], kind="stable").reset_index(
        drop=True
    )
    frame.to_parquet(path, index=False)
    totals = (
        json.loads((folder / "defects.json").read_text())["records_written"]
        if (folder / "defects.json").exists()
        else {}
    )
    for key, value in written.items():
        totals[key] = totals.get(key, 0) + value
    totals["users"] = state.n_users
    counts: dict[str, dict[str, int]] = {}
    for (source, kind), group in frame.groupby(["source", "kind"]):
        counts.setdefault(str(source), {})[str(kind)] = len(group)
    doc = {
        "through": str(state.config.date_of(state.last_day)),
        "defects": counts,
        "records_written": totals,
        "note": "events: records_written counts lines, duplicates included; "
        "an unreadable_file adds a file, not records",
    }
    (folder / "defects.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _write_tastes(settings: Settings, state: SimState) -> None:
    folder = truth_dir(settings)
    frame = pd.DataFrame(state.taste, columns=list(m.GENRES))
    frame.insert(0, "user_id", state.users["user_id"])
    frame.to_parquet(folder / "user_genre_taste.parquet", index=False)


def churn_truth(settings: Settings, state: SimState | None = None) -> pd.DataFrame:
    """Truth per (user, as-of day): true 30-day churn probability, drivers and realised label.

    Only as-of days whose whole label window has been simulated are returned.
    """
    state = state or load_state(settings)
    if state is None:
        raise SimulationError("nothing simulated yet: run `loopline simulate` first")
    truth = pd.read_parquet(truth_dir(settings) / "churn_truth.parquet")
    truth = truth[truth["day"] + m.LABEL_WINDOW_DAYS <= state.last_day].copy()
    cancelled = pd.Series(state.users["cancelled_day"], index=state.users["user_id"])
    cday = cancelled.reindex(truth["user_id"]).to_numpy()
    day = truth["day"].to_numpy()
    truth["churned_30d"] = ((cday > day) & (cday <= day + m.LABEL_WINDOW_DAYS)).astype(np.int8)
    truth["as_of"] = pd.Timestamp(state.config.start) + pd.to_timedelta(day, unit="D")
    return truth.reset_index(drop=True)


CHURN_REFERENCE = "churn_reference.parquet"


def churn_reference_path(settings: Settings) -> Path:
    """The churn reference in the truth files: what a consumer reads, without the simulator."""
    return truth_dir(settings) / CHURN_REFERENCE


def write_churn_reference(settings: Settings, state: SimState | None = None) -> Path | None:
    """Write the churn reference: one row per (user, as-of day) with a complete label window.

    Columns: ``user_id`` (int64), ``as_of_date`` (date), ``p_churn_30d`` (the true 30-day
    churn probability) and ``churned_30d`` (the realised label). Training reads it to log
    the reference (Bayes-optimal) AUC on its own holdout rows. Every simulate run rewrites
    it; returns None when nothing is simulated yet.
    """
    state = state or load_state(settings)
    if state is None or not (truth_dir(settings) / "churn_truth.parquet").exists():
        return None
    truth = churn_truth(settings, state)
    frame = pd.DataFrame(
        {
            "user_id": truth["user_id"].astype("int64"),
            "as_of_date": pd.to_datetime(truth["as_of"]).dt.date,
            "p_churn_30d": truth["p_churn_30d"].astype("float64"),
            "churned_30d": truth["churned_30d"].astype("int8"),
        }
    )
    path = churn_reference_path(settings)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def ensure_churn_reference(settings: Settings) -> Path | None:
    """The churn reference, written first if a simulation exists but the file does not yet."""
    path = churn_reference_path(settings)
    return path if path.exists() else write_churn_reference(settings)


def _bayes_auc(settings: Settings, state: SimState) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not (truth_dir(settings) / "churn_truth.parquet").exists():
        return None
    truth = churn_truth(settings, state)
    if truth["churned_30d"].nunique() < 2:
        return None
    return float(roc_auc_score(truth["churned_30d"], truth["p_churn_30d"]))


def _write_summary(settings: Settings, state: SimState, auc: float | None) -> None:
    doc = {
        "config": state.config.model_dump(mode="json"),
        "simulated_through": str(state.config.date_of(state.last_day)),
        "users": state.n_users,
        "shows": len(state.shows),
        "bayes_auc_churn_30d": auc,
        "bayes_auc_note": "ROC AUC of the true 30-day churn probability (from the latent daily "
        "hazard at the as-of day) against realised labels, over as-of days with a complete window",
    }
    (truth_dir(settings) / "summary.json").write_text(
        json.dumps(doc, indent=2, sort_keys=True) + "\n"
    )
