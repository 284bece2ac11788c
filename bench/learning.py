"""Row 7: the churn model's quality against the simulator's truth, as a learning curve.

For each company size (users on the start date, the same days and seed), a company is
simulated, ingested and built (the churn feature mart and labels only, no tests), then the
churn model is trained exactly as ``loopline train`` trains it (`ml.churn.train.fit_churn`:
the same training set, user-disjoint time holdout, grid search and calibration; without the
MLflow logging and registry). Each size reports, on the same holdout rows:

- the model's ROC AUC and the reference (Bayes) ROC AUC of the simulator's true churn
  probabilities (`_truth/churn_reference.parquet`, read as ``bayes_auc_on`` reads it), and
  their ratio (target: >= 0.97 at 25,000 users);
- a recency baseline: ``days_since_last_view`` alone as the score (no fitting);
- calibration: Brier score and expected calibration error (10 equal-width bins) of the
  model, and the Brier score of the true probabilities (the floor a model can reach).

A company folder that already holds a built warehouse of the same size is reused
(``--rebuild`` in bench.run rebuilds it): simulating and ingesting 25,000 users takes minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.fixture import bench_settings
from loopline.settings import Settings

START = date(2026, 1, 1)
DAYS = 120  # the demo company's length
FULL_SIZES = (1_500, 5_000, 25_000)
QUICK_SIZES = (300,)
QUICK_DAYS = 75  # 45 labelled days: enough for three time folds and a holdout
TARGET_RATIO = 0.97  # model ROC AUC / Bayes ROC AUC at the largest size
BASELINE = "days_since_last_view"
# what the dbt build of a learning company selects: the churn mart, its labels and upstream
SELECT = "+fs_churn__user_daily +label_churn__user_daily"


def company_dir(root: Path, users: int, days: int) -> Path:
    return root / f"learning-u{users}-d{days}"


def ensure_ingested(
    folder: Path, users: int, days: int, say: Callable[[str], None], rebuild: bool = False
) -> Settings:
    """Simulate and ingest a company of `users` over `days` days in `folder`, unless done."""
    import shutil

    from loopline.ingest.run import ingest
    from loopline.simulate import SimConfig, load_state, simulate
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import CatalogueServer

    settings = bench_settings(folder)
    marker = folder / "ingested.json"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    if not marker.exists():
        if folder.exists():  # an interrupted preparation: start over
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        until = START + timedelta(days=days - 1)
        say(f"learning: simulating {users:,} users over {days} days in {folder}")
        config = SimConfig.model_validate({"users": users, "start": START})
        simulate(settings, until, config, progress=False)
        say(f"learning: ingesting {users:,} users")
        with CatalogueServer(catalogue_dir(settings)) as vendor:
            ingest(settings, catalogue_url=vendor.url, progress=False)
        state = load_state(settings)
        marker.write_text(
            json.dumps(
                {
                    "users": users,
                    "days": days,
                    "users_ever": None if state is None else int(state.n_users),
                    "seconds": time.perf_counter() - t0,
                }
            )
        )
    return settings


def build_churn_mart(settings: Settings) -> None:
    """dbt build of the churn features and labels and what they read (every run: the
    definitions may have changed since the company was ingested)."""
    from loopline.dbt import run_dbt

    run_dbt(settings, ["build", "--select", SELECT, "--exclude-resource-type", "test", "unit_test"])


#: the columns issue 14 row 7 added to fs_churn__user_daily; "before" trains without them
ADDED_FEATURES = (
    "sessions_14d",
    "log_session_rate_7d",
    "log_session_rate_30d",
    "log_session_rate_90d",
    "session_trend_7d_90d",
    "log_tenure_months",
)


def truth_probabilities(settings: Settings, holdout: pd.DataFrame) -> np.ndarray:
    """The simulator's true 30-day churn probability of each holdout row (NaN where none)."""
    path = settings.sources_dir / "_truth" / "churn_reference.parquet"
    truth = pd.read_parquet(path, columns=["user_id", "as_of_date", "p_churn_30d"])
    truth = truth.assign(
        user_id=truth["user_id"].astype("int64"), as_of_date=pd.to_datetime(truth["as_of_date"])
    )
    rows = pd.DataFrame(
        {
            "user_id": holdout["user_id"].astype("int64").to_numpy(),
            "as_of_date": pd.to_datetime(holdout["as_of_date"]).to_numpy(),
        }
    )
    return rows.merge(truth, on=["user_id", "as_of_date"], how="left")["p_churn_30d"].to_numpy()


KEYS = ("user_id", "as_of_date")
#: what the company sees of viewing: the columns an estimate of the latent engagement reads
VIEWING_PREFIXES = (
    "watch_", "sessions_", "active_days_", "observed_days_", "log_session_rate_",
    "session_trend_", "days_since_last_view", "minutes_per_session_", "genre_days_",
    "mobile_share_",
)  # fmt: skip


def observable_ceiling(
    settings: Settings, train_part: pd.DataFrame, holdout: pd.DataFrame
) -> float | None:
    """ROC AUC on the holdout of the simulator's own hazard (its coefficients and its true
    payments, tickets, price and tenure) with the latent engagement replaced by a linear
    estimate from the viewing features, fitted on the training rows: what a model that
    knew the true form could reach from what the company sees of engagement. Not a bound
    (a better estimate of engagement would do better), a yardstick for the Bayes gap."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import roc_auc_score

    from loopline.simulate import load_state
    from loopline.simulate import model as sim
    from ml.churn.train import LABEL

    path = settings.sources_dir / "_truth" / "churn_truth.parquet"
    state = load_state(settings)
    if not path.exists() or state is None:
        return None
    truth = pd.read_parquet(path)
    truth = truth.assign(
        user_id=truth["user_id"].astype("int64"),
        as_of_date=pd.Timestamp(state.config.start) + pd.to_timedelta(truth["day"], unit="D"),
    ).drop(columns=["day", "p_churn_30d"])
    truth = truth.rename(columns={c: f"true_{c}" for c in truth.columns if c not in KEYS})
    columns = [c for c in holdout.columns if c.startswith(VIEWING_PREFIXES)]

    def joined(rows: pd.DataFrame) -> pd.DataFrame:
        keyed = rows.assign(
            user_id=rows["user_id"].astype("int64"), as_of_date=pd.to_datetime(rows["as_of_date"])
        )
        return keyed.merge(truth, on=list(KEYS), how="inner")

    train_rows, held = joined(train_part), joined(holdout)
    if held.empty or held[LABEL].nunique() < 2:
        return None
    x_train = train_rows[columns].astype("float64").fillna(0.0)
    estimate = LinearRegression().fit(x_train, train_rows["true_engagement"])
    engagement = estimate.predict(held[columns].astype("float64").fillna(0.0))
    eta = sim.churn_eta(
        sim.BASE_COEFFICIENTS,
        engagement,
        held["true_failed_payment_30d"].to_numpy(),
        held["true_ticket_30d"].to_numpy(),
        held["true_price_usd"].to_numpy(),
        held["true_tenure_days"].to_numpy(),
    )
    return float(roc_auc_score(held[LABEL].astype(int), eta))


def measure(settings: Settings, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train as `loopline train` does (minus `exclude`d columns); judge on the holdout."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from ml.churn.train import LABEL, fit_churn
    from ml.config import load_ml_config

    config = load_ml_config().churn
    if exclude:
        train = config.train.model_copy(update={"exclude": (*config.train.exclude, *exclude)})
        config = config.model_copy(update={"train": train})
    t0 = time.perf_counter()
    fit = fit_churn(settings, config)
    seconds = time.perf_counter() - t0
    y = fit.holdout[LABEL].astype(int).to_numpy()
    truth = truth_probabilities(settings, fit.holdout)
    known = ~np.isnan(truth)
    recency = fit.holdout[BASELINE].astype("float64").fillna(0.0).to_numpy()
    evaluation = fit.evaluation
    return {
        "estimator": fit.trained.kind,
        "params": fit.trained.best_params,
        "cv_roc_auc": fit.trained.cv_scores,
        "features": len(fit.trained.feature_columns),
        "train_rows": len(fit.train_part),
        "holdout_rows": len(fit.holdout),
        "holdout_users": int(fit.holdout["user_id"].nunique()),
        "positive_rate": float(y.mean()),
        "roc_auc": evaluation.roc_auc,
        "bayes_auc": fit.bayes_auc,
        "ratio": evaluation.roc_auc / fit.bayes_auc if fit.bayes_auc else None,
        "baseline_auc": float(roc_auc_score(y, recency)),
        "brier": evaluation.brier,
        "ece": evaluation.ece,
        "bayes_brier": float(brier_score_loss(y[known], truth[known])) if known.any() else None,
        "truth_rows": int(known.sum()),
        "observable_ceiling_auc": (
            None if exclude else observable_ceiling(settings, fit.train_part, fit.holdout)
        ),
        "seconds": seconds,
    }


def run_learning(
    root: Path,
    sizes: tuple[int, ...],
    days: int,
    say: Callable[[str], None],
    rebuild: bool = False,
    before: bool = True,
) -> dict[str, Any]:
    """One point per company size: the model with today's features and, with `before`,
    without the columns row 7 added (the gap the new features closed)."""
    points = []
    for users in sizes:
        t0 = time.perf_counter()
        settings = ensure_ingested(company_dir(root, users, days), users, days, say, rebuild)
        build_churn_mart(settings)
        prepared = time.perf_counter() - t0
        point: dict[str, Any] = {"users": users, "days": days, "prepare_s": prepared}
        say(f"learning: training at {users:,} users (today's features)")
        point["after"] = measure(settings)
        if before:
            say(f"learning: training at {users:,} users (without the added features)")
            point["before"] = measure(settings, ADDED_FEATURES)
        after = point["after"]
        say(
            f"learning: {users:,} users: ROC AUC {after['roc_auc']:.3f} vs Bayes "
            f"{after['bayes_auc'] or float('nan'):.3f} ({after['estimator']})"
        )
        points.append(point)
    return {"points": points, "target_ratio": TARGET_RATIO, "baseline": BASELINE, "days": days}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def learning_body(d: dict[str, Any]) -> list[str]:
    """The RESULTS.md section body of row 7."""
    sizes = ", ".join(f"{p['users']:,}" for p in d["points"])
    lines = [
        "",
        f"Companies of {sizes} users on the start "
        f"date (the same seed, {d['days']} days, sign-ups on top), each simulated, ingested and "
        "built (the churn mart and labels), then trained as `loopline train` trains "
        "(`ml.churn.train.fit_churn`: the user-disjoint time holdout of conf/ml.yaml, the "
        "logreg and hist_gb grids on three time folds, sigmoid calibration). Bayes = ROC AUC "
        "of the simulator's true 30-day churn probabilities on the same holdout rows; "
        f"baseline = `{d['baseline']}` alone as the score; ECE over 10 equal-width bins; "
        "Brier (truth) = the Brier score of the true probabilities, the floor. Ceiling = "
        "`observable_ceiling`: the simulator's own hazard with its latent engagement replaced "
        "by a linear estimate from the viewing features (fitted on the training rows), i.e. "
        'what knowing the true form would reach from what the company sees. "Before" '
        "trains without the columns row 7 added ("
        + ", ".join(f"`{c}`" for c in ADDED_FEATURES)
        + ").",
        "",
        "| users | holdout rows (users) | churn rate | model | ROC AUC | Bayes | ratio | "
        "ceiling (ratio) | baseline | Brier | Brier (truth) | ECE | "
        "before: ROC AUC (ratio, model) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in d["points"]:
        a, b = p["after"], p.get("before")
        was = f"{b['roc_auc']:.3f} ({_f(b['ratio'])}x, {b['estimator']})" if b else "not run"
        ceiling = a.get("observable_ceiling_auc")
        reach = (
            f"{ceiling:.3f} ({ceiling / a['bayes_auc']:.3f}x)"
            if ceiling is not None and a["bayes_auc"]
            else "n/a"
        )
        lines.append(
            f"| {p['users']:,} | {a['holdout_rows']:,} ({a['holdout_users']:,}) | "
            f"{a['positive_rate']:.3f} | {a['estimator']} | {a['roc_auc']:.3f} | "
            f"{_f(a['bayes_auc'])} | {_f(a['ratio'])}x | {reach} | {a['baseline_auc']:.3f} | "
            f"{a['brier']:.4f} | {_f(a['bayes_brier'], 4)} | {a['ece']:.4f} | {was} |"
        )
    lines += [
        "",
        "CV ROC AUC of each candidate's best grid point (today's features): "
        + "; ".join(
            f"{p['users']:,} users "
            + ", ".join(f"{k} {v:.3f}" for k, v in p["after"]["cv_roc_auc"].items())
            for p in d["points"]
        )
        + ".",
    ]
    return lines
