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


#: the columns the latest pass of issue 14 row 7 added to fs_churn__user_daily; "before"
#: trains without them (the first pass added sessions_14d, log_session_rate_7d/30d/90d,
#: session_trend_7d_90d and log_tenure_months)
ADDED_FEATURES = ("has_failed_payment_30d", "has_ticket_30d", "log_session_rate_to_date")


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

    from ml.churn.train import LABEL

    columns = [c for c in holdout.columns if c.startswith(VIEWING_PREFIXES)]
    train_rows, held = _truth_rows(settings, train_part), _truth_rows(settings, holdout)
    if held.empty or held[LABEL].nunique() < 2:
        return None
    x_train = train_rows[columns].astype("float64").fillna(0.0)
    estimate = LinearRegression().fit(x_train, train_rows["true_engagement"])
    engagement = estimate.predict(held[columns].astype("float64").fillna(0.0))
    return _true_form_auc(held, engagement, np.zeros(len(held)))


#: Gauss-Hermite nodes and weights (probabilists'): the posterior expectation of the 30-day
#: churn probability over a normal posterior of engagement
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(9)


def daily_sessions(settings: Settings) -> tuple[pd.DataFrame, np.ndarray, pd.DatetimeIndex]:
    """Every user's viewing sessions on each day of the data: (users with their first
    observed day, a users x days count matrix, the days). A user is observed from the later
    of signup and the data's first day; days before that hold -1."""
    from loopline.warehouse import reading

    with reading(settings) as con:
        activity = con.execute(
            "select user_id, activity_date, viewing_sessions from core.fct_user_activity_daily"
        ).df()
        users = con.execute(
            "select user_id, signup_at::date as signup_date from core.dim_users order by user_id"
        ).df()
        first, last = con.execute(
            "select min(event_date), max(event_date) from staging.stg_events__viewing_events"
        ).fetchone()
    days = pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D")
    users = users.assign(user_id=users["user_id"].astype("int64"))
    users["first_day"] = np.maximum(pd.to_datetime(users["signup_date"]), days[0])
    row = pd.Series(np.arange(len(users)), index=users["user_id"].to_numpy())
    counts = np.zeros((len(users), len(days)))
    activity = activity[pd.to_datetime(activity["activity_date"]).between(days[0], days[-1])]
    r = row.reindex(activity["user_id"].astype("int64").to_numpy()).to_numpy()
    c = (pd.to_datetime(activity["activity_date"]) - days[0]).dt.days.to_numpy()
    known = ~np.isnan(r)
    counts[r[known].astype(int), c[known]] = activity["viewing_sessions"].to_numpy()[known]
    start = (users["first_day"] - days[0]).dt.days.to_numpy()
    counts[np.arange(len(days))[None, :] < start[:, None]] = -1.0
    return users, counts, days


def filter_engagement(
    counts: np.ndarray,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    rate: tuple[float, float] = (-0.45, 0.55),
    hazard_offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mean and variance of each user's engagement at the end of each day,
    given every daily session count seen so far (rows: users, -1 before a user is seen),
    under the simulator's own model: engagement = a lasting level mu plus an AR(1) wander
    (each user's prior (mu, wander) means and variances: users x 2), sessions ~
    Poisson(exp(rate[0] + rate[1] engagement)) (the simulator's rate: -0.45, 0.55). With
    `hazard_offset` (users x days: the logit of the churn hazard that ended the day before,
    without its engagement term; NaN: none) the user's still being subscribed is evidence
    too (the disengaged leave). A Kalman filter
    on (mu, wander) whose Poisson update is a Laplace approximation (Newton on the
    one-dimensional engagement); the best a model can know of engagement from viewing."""
    from loopline.simulate import model as sim

    a, b = rate
    k = sim.BASE_COEFFICIENTS.engagement
    n, days = counts.shape
    mean = prior_mean.astype("float64").copy()
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = prior_var[:, 0], prior_var[:, 1]
    out_mean, out_var = np.full((n, days), np.nan), np.full((n, days), np.nan)
    decay, step = sim.WANDER_DECAY, sim.WANDER_STEP**2
    for d in range(days):
        seen = counts[:, d] >= 0
        # the wander moves (a user seen for the first time starts from the stationary prior)
        mean[seen, 1] *= decay
        cov[seen, 0, 1] *= decay
        cov[seen, 1, 0] *= decay
        cov[seen, 1, 1] = decay**2 * cov[seen, 1, 1] + step
        # update on the day's count: engagement s = mu + wander, prior N(sp, vs)
        hp = cov[:, :, 0] + cov[:, :, 1]  # cov @ h, h = (1, 1)
        sp, vs = mean.sum(axis=1), hp.sum(axis=1)
        y = np.where(seen, counts[:, d], 0.0)
        # surviving a day of hazard sigmoid(offset + k s) ~ exp(-exp(offset + k s))
        offset = np.full(n, -np.inf) if hazard_offset is None else hazard_offset[:, d]
        offset = np.where(np.isnan(offset), -np.inf, offset)
        s = sp.copy()
        for _ in range(8):
            lam, risk = np.exp(a + b * s), np.exp(offset + k * s)
            grad = (s - sp) / vs - b * (y - lam) + k * risk
            s = s - grad / (1.0 / vs + b * b * lam + k * k * risk)
        v_post = 1.0 / (1.0 / vs + b * b * np.exp(a + b * s) + k * k * np.exp(offset + k * s))
        shift = (s - sp) / vs
        shrink = (vs - v_post) / vs**2
        new_mean = mean + hp * shift[:, None]
        new_cov = cov - hp[:, :, None] * hp[:, None, :] * shrink[:, None, None]
        mean = np.where(seen[:, None], new_mean, mean)
        cov = np.where(seen[:, None, None], new_cov, cov)
        out_mean[:, d] = np.where(seen, s, np.nan)
        out_var[:, d] = np.where(seen, v_post, np.nan)
    return out_mean, out_var


def _truth_rows(settings: Settings, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` joined to the simulator's truth of the same user and day (true_* columns)."""
    from loopline.simulate import load_state

    path = settings.sources_dir / "_truth" / "churn_truth.parquet"
    state = load_state(settings)
    if not path.exists() or state is None:
        return rows.iloc[0:0]
    truth = pd.read_parquet(path)
    truth = truth.assign(
        user_id=truth["user_id"].astype("int64"),
        as_of_date=pd.Timestamp(state.config.start) + pd.to_timedelta(truth["day"], unit="D"),
    ).drop(columns=["day", "p_churn_30d"])
    truth = truth.rename(columns={c: f"true_{c}" for c in truth.columns if c not in KEYS})
    keyed = rows.assign(
        user_id=rows["user_id"].astype("int64"), as_of_date=pd.to_datetime(rows["as_of_date"])
    )
    return keyed.merge(truth, on=list(KEYS), how="inner")


def _true_form_auc(held: pd.DataFrame, engagement: np.ndarray, variance: np.ndarray) -> float:
    """ROC AUC of the simulator's 30-day churn probability with its true payments, tickets,
    price and tenure, averaged over a normal posterior of engagement (mean, variance)."""
    from sklearn.metrics import roc_auc_score

    from loopline.simulate import model as sim
    from ml.churn.train import LABEL

    sd = np.sqrt(np.maximum(variance, 0.0))
    p = np.zeros(len(held))
    for node, weight in zip(_GH_NODES, _GH_WEIGHTS / _GH_WEIGHTS.sum(), strict=True):
        eta = sim.churn_eta(
            sim.BASE_COEFFICIENTS,
            engagement + node * sd,
            held["true_failed_payment_30d"].to_numpy(),
            held["true_ticket_30d"].to_numpy(),
            held["true_price_usd"].to_numpy(),
            held["true_tenure_days"].to_numpy(),
        )
        p += weight * sim.churn_probability_30d(eta)
    return float(roc_auc_score(held[LABEL].astype(int), p))


def _user_days(users: pd.DataFrame, days: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.repeat(users["user_id"].to_numpy(), len(days)),
            "as_of_date": np.tile(days.to_numpy(), len(users)),
        }
    )


def engagement_prior(
    settings: Settings, users: pd.DataFrame, first_day: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's prior (mu, wander) means and variances (users x 2). A sign-up draws both
    from the population (mu ~ N(0, ENGAGEMENT_SD^2), the wander at its stationary spread);
    the subscribers on the data's first day are the survivors of earlier sign-ups, more
    engaged: their engagement's mean and variance are read from the truth of that day and
    split between mu and the wander in proportion to the population's variances."""
    from loopline.simulate import model as sim

    population = np.array([sim.ENGAGEMENT_SD**2, sim.WANDER_SD**2])
    mean, var = np.zeros((len(users), 2)), np.tile(population, (len(users), 1))
    start = _truth_rows(
        settings, pd.DataFrame({"user_id": users["user_id"], "as_of_date": first_day})
    )
    existing = (pd.to_datetime(users["signup_date"]) < first_day).to_numpy()
    if len(start) > 1 and existing.any():
        share = population / population.sum()
        mean[existing] = start["true_engagement"].mean() * share
        var[existing] = population * start["true_engagement"].var() / population.sum()
    return mean, var


def filter_ceiling(settings: Settings, holdout: pd.DataFrame) -> float | None:
    """ROC AUC on the holdout of the simulator's own 30-day churn probability (its true
    payments, tickets, price and tenure) averaged over the posterior of engagement that
    `filter_engagement` derives from each user's whole viewing history: what the best use of
    the observed viewing could reach. Tickets and plan changes, which also depend on
    engagement, are left out (a ticket is ~100 times rarer than a session day)."""
    from ml.churn.train import LABEL

    held = _truth_rows(settings, holdout)
    if held.empty or held[LABEL].nunique() < 2:
        return None
    from sklearn.linear_model import PoissonRegressor

    from loopline.simulate import model as sim

    users, counts, days = daily_sessions(settings)
    row = pd.Series(np.arange(len(users)), index=users["user_id"].to_numpy())
    # the hazard that ended each day before, without engagement (true payments, tickets,
    # price, tenure, as the ceiling uses them); the survival term of the next day
    every = _truth_rows(settings, _user_days(users, days))
    offset = np.full(counts.shape, np.nan)
    every = every[every["user_id"].isin(row.index)]
    r = row.reindex(every["user_id"].to_numpy()).to_numpy().astype(int)
    c = (every["as_of_date"] - days[0]).dt.days.to_numpy() + 1
    inside = c < len(days)
    offset[r[inside], c[inside]] = sim.churn_eta(
        sim.BASE_COEFFICIENTS,
        0.0,
        every["true_failed_payment_30d"].to_numpy(),
        every["true_ticket_30d"].to_numpy(),
        every["true_price_usd"].to_numpy(),
        every["true_tenure_days"].to_numpy(),
    )[inside]
    # the sessions the warehouse counts are fewer than the simulator starts (a viewer's
    # sessions 30 minutes apart are one, pauses): the count's log rate in engagement, fitted
    rate = PoissonRegressor(alpha=0.0).fit(
        every["true_engagement"].to_numpy()[:, None], counts[r, c - 1]
    )
    prior = engagement_prior(settings, users, days[0])
    mean, var = filter_engagement(
        counts, *prior, (float(rate.intercept_), float(rate.coef_[0])), offset
    )
    r = row.reindex(held["user_id"].to_numpy()).to_numpy()
    c = (held["as_of_date"] - days[0]).dt.days.to_numpy()
    ok = ~np.isnan(r) & (c >= 0) & (c < len(days))
    held = held[ok]
    r, c = r[ok].astype(int), c[ok]
    return _true_form_auc(held, mean[r, c], var[r, c])


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
        "filter_ceiling_auc": None if exclude else filter_ceiling(settings, fit.holdout),
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
        "Brier (truth) = the Brier score of the true probabilities, the floor. Both ceilings "
        "are the simulator's own 30-day churn probability (its coefficients, its true payments, "
        "tickets, price and tenure) with the latent engagement replaced by an estimate from "
        "what the company sees of viewing: linear = `observable_ceiling`, a linear regression "
        "on the viewing features (fitted on the training rows); filter = `filter_ceiling`, the "
        "posterior of engagement from each user's whole daily session history (a Kalman filter "
        "on the lasting level and the AR(1) wander, Poisson counts, the survivors' prior, "
        "staying subscribed as evidence), i.e. the best use of the viewing history. "
        '"Before" trains without the columns this pass of row 7 added ('
        + ", ".join(f"`{c}`" for c in ADDED_FEATURES)
        + ").",
        "",
        "| users | holdout rows (users) | churn rate | model | ROC AUC | Bayes | ratio | "
        "ceiling: linear (ratio) | ceiling: filter (ratio) | baseline | Brier | Brier (truth) | "
        "ECE | before: ROC AUC (ratio, model) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in d["points"]:
        a, b = p["after"], p.get("before")
        was = f"{b['roc_auc']:.3f} ({_f(b['ratio'])}x, {b['estimator']})" if b else "not run"
        reach = [
            f"{ceiling:.3f} ({ceiling / a['bayes_auc']:.3f}x)"
            if ceiling is not None and a["bayes_auc"]
            else "n/a"
            for ceiling in (a.get("observable_ceiling_auc"), a.get("filter_ceiling_auc"))
        ]
        lines.append(
            f"| {p['users']:,} | {a['holdout_rows']:,} ({a['holdout_users']:,}) | "
            f"{a['positive_rate']:.3f} | {a['estimator']} | {a['roc_auc']:.3f} | "
            f"{_f(a['bayes_auc'])} | {_f(a['ratio'])}x | {' | '.join(reach)} | "
            f"{a['baseline_auc']:.3f} | {a['brier']:.4f} | {_f(a['bayes_brier'], 4)} | "
            f"{a['ece']:.4f} | {was} |"
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
    if d.get("note"):  # what a run left out, written into results.json by hand
        lines += ["", d["note"]]
    return lines
