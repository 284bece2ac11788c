"""The day step: one simulated day of the company, vectorised over users.

Each day draws from random streams keyed by (seed, day index) only, and reads nothing
but the state at the end of the previous day, so any split of a date range into runs
gives the same company.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from loopline.simulate import model as m
from loopline.simulate.catalogue import DAY_S, new_shows, number_episodes
from loopline.simulate.config import SimConfig
from loopline.simulate.state import NEVER, SimState, append_users, empty_users

N_STREAMS = 8
(S_SIGNUP, S_LATENT, S_SUBS, S_BILLING, S_TICKETS, S_SESSIONS, S_CATALOGUE, S_DEFECTS) = range(
    N_STREAMS
)
HISTORY_DAYS = 730  # users on the start date signed up within the two years before
POOL_FACTOR = 4  # signups drawn per start-date subscriber (the survivors are chosen from them)


def day_epoch(config: SimConfig, day: int) -> int:
    """Epoch seconds of the day's midnight, UTC."""
    d = config.date_of(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def day_streams(config: SimConfig, day: int) -> list[np.random.Generator]:
    seq = np.random.SeedSequence([config.seed, day + 10_000])
    return [np.random.default_rng(s) for s in seq.spawn(N_STREAMS)]


@dataclass
class DayOutput:
    """What one day produced, before it is written anywhere."""

    sessions: pd.DataFrame
    payments: pd.DataFrame
    tickets: pd.DataFrame
    truth: pd.DataFrame


# -- initial state ----------------------------------------------------------------------
def initial_state(config: SimConfig) -> SimState:
    """The company on the morning of the start date: users, catalogue, nothing logged yet."""
    seq = np.random.SeedSequence([config.seed, 0])
    rng_users, rng_cat = (np.random.default_rng(s) for s in seq.spawn(2))
    day0 = day_epoch(config, 0)
    release = -rng_cat.integers(1, m.LICENCE_DAYS, config.n_shows)
    shows, episodes = new_shows(rng_cat, 1, config.n_shows, np.sort(release), day0)
    state = SimState(
        config=config,
        last_day=-1,
        users=empty_users(0),
        taste=np.zeros((0, len(m.GENRES))),
        shows=shows,
        episodes=number_episodes(episodes, 1),
        counters={"next_show": config.n_shows + 1, "next_episode": len(episodes) + 1},
    )
    signup_day, mu, wander = _survivors(rng_users, config.users)
    _add_users(state, rng_users, signup_day, day0, existing=True, mu=mu, wander=wander)
    state.users["eta"][:] = -np.inf  # nobody cancels on the first morning
    return state


def _survivors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signup day, lasting engagement, wander) of the start date's `n` subscribers.

    A calm company is stationary. Subscribers who signed up long ago and stayed are the
    engaged ones, so drawing the start date's users from every signup would make engagement
    climb for months as the disengaged leave (and a drift monitor would rightly call that
    drift). Instead a pool of signups, spread evenly over the history, lives through it (the
    wander and the daily hazard, without payments or tickets), and `n` of the survivors are
    drawn; each starts with the wander it has reached.
    """
    pool = -rng.integers(1, HISTORY_DAYS, POOL_FACTOR * n)
    mu = rng.normal(0.0, m.ENGAGEMENT_SD, len(pool))
    wander = rng.normal(0.0, m.WANDER_SD, len(pool))
    alive = np.ones(len(pool), dtype=bool)
    zeros, price = np.zeros(len(pool)), np.full(len(pool), 12.0)
    for day in range(-HISTORY_DAYS, 0):
        wander = m.WANDER_DECAY * wander + rng.normal(0.0, m.WANDER_STEP, len(pool))
        tenure = (day - pool).astype(np.float64)
        eta = m.churn_eta(m.BASE_COEFFICIENTS, mu + wander, zeros, zeros, price, tenure)
        alive &= (tenure < 0) | (rng.random(len(pool)) >= m.sigmoid(eta))
    survivors = np.flatnonzero(alive)
    if len(survivors) < n:  # pragma: no cover - the pool is sized for a few years of churn
        raise RuntimeError(f"{len(survivors)} of {len(pool)} signups survived; {n} needed")
    chosen = np.sort(rng.choice(survivors, n, replace=False))
    chosen = chosen[np.argsort(pool[chosen], kind="stable")]
    return pool[chosen], mu[chosen], wander[chosen]


def _add_users(
    state: SimState,
    rng: np.random.Generator,
    signup_day: np.ndarray,
    day0: int,
    existing: bool,
    mu: np.ndarray | None = None,
    wander: np.ndarray | None = None,
) -> np.ndarray:
    """Append users who signed up on `signup_day` (day indices); return their positions."""
    cfg = state.config
    n = len(signup_day)
    first = state.n_users + 1
    new = empty_users(n)
    new["user_id"] = np.arange(first, first + n)
    new["signup_at"] = day0 + signup_day.astype(np.int64) * DAY_S + rng.integers(0, DAY_S, n)
    new["country"] = rng.choice(len(m.COUNTRIES), n, p=m.COUNTRY_WEIGHTS)
    age_days = rng.integers(18 * 365, 75 * 365, n)
    new["birth_date"] = (new["signup_at"] // DAY_S - age_days).astype(np.int32)
    new["channel"] = rng.choice(len(m.CHANNELS), n, p=m.CHANNEL_WEIGHTS)
    weights = m.DEVICE_WEIGHTS
    shifted = cfg.drift_kind == "device_mix" and cfg.drift_start is not None and not existing
    if shifted and n and int(signup_day.min()) >= cfg.day_index(cfg.drift_start):  # type: ignore[arg-type]
        weights = m.DEVICE_WEIGHTS_SHIFTED
    new["device"] = rng.choice(len(m.DEVICES), n, p=weights)
    new["first_name"] = rng.integers(0, 500, n)
    new["last_name"] = rng.integers(0, 800, n)
    new["mu"] = rng.normal(0.0, m.ENGAGEMENT_SD, n) if mu is None else mu
    new["wander"] = rng.normal(0.0, m.WANDER_SD, n) if wander is None else wander
    risky = rng.random(n) < 0.08
    new["pay_risk"] = np.where(risky, rng.beta(4, 8, n), rng.beta(1, 60, n))
    rollout = cfg.day_index(cfg.rename_rollout_on) if cfg.rename_rollout_on else 10**6
    new["adopt_day"] = rollout + rng.exponential(12.0, n).astype(np.int32)
    new["plan_id"] = rng.choice([1, 2, 3], n, p=m.PLAN_WEIGHTS)
    new["status"][:] = 0
    new["sub_started_day"] = signup_day
    new["sub_started_at"] = new["signup_at"]
    new["paused_at"][:] = -1
    new["resume_day"][:] = NEVER
    new["cancelled_at"][:] = -1
    new["cancelled_day"][:] = NEVER
    new["sub_updated_at"] = new["signup_at"]
    new["last_fail_day"][:] = NEVER
    new["last_ticket_day"][:] = NEVER
    new["retry_day"][:] = -1
    new["refund_day"][:] = -1
    new["eta"][:] = -np.inf
    # injected defects in the OLTP users table (at most one per user)
    kind = rng.random(n)
    new["defect"] = np.select([kind < cfg.defect_rate, kind < 2 * cfg.defect_rate], [1, 2], 0)
    future = new["defect"] == 1
    new["birth_date"] = np.where(
        future, new["signup_at"] // DAY_S + rng.integers(30, 4000, n), new["birth_date"]
    )
    taste = rng.dirichlet(np.full(len(m.GENRES), 0.35), n)
    state.users = append_users(state.users, new)
    state.taste = np.vstack([state.taste, taste])
    return np.arange(first - 1, first - 1 + n)


# -- the day step ---------------------------------------------------------------------------
def price_usd(state: SimState, plan_id: np.ndarray) -> np.ndarray:
    base = np.array([0.0] + [p[2] for p in m.PLANS])
    return base[plan_id] * state.plan_price_factor


def simulate_day(state: SimState, day: int) -> DayOutput:
    """Advance `state` by one day (in place) and return what the day produced."""
    cfg = state.config
    assert day == state.last_day + 1, "days are simulated in order"
    rngs = day_streams(cfg, day)
    t0 = day_epoch(cfg, day)
    u = state.users

    # 1. catalogue: new releases and metadata edits; the price-rise scenario
    _catalogue_day(state, rngs[S_CATALOGUE], day, t0)
    if cfg.drift_kind == "price_rise" and cfg.drift_start and day == cfg.day_index(cfg.drift_start):
        state.plan_price_factor = m.PRICE_RISE
        state.plan_prices_updated_at = t0 + 6 * 3600

    # 2. signups
    n_new = rngs[S_SIGNUP].poisson(cfg.signups_per_day_rate * cfg.users)
    if n_new:
        _add_users(state, rngs[S_SIGNUP], np.full(n_new, day), day_epoch(cfg, 0), existing=False)
        u = state.users
    n = state.n_users

    # 3. latent engagement wanders
    r = rngs[S_LATENT]
    u["wander"] = m.WANDER_DECAY * u["wander"] + r.normal(0.0, m.WANDER_STEP, n)
    engagement = u["mu"] + u["wander"]

    # 4. subscriptions: resumes, cancellations (yesterday's hazard), pauses, plan changes
    r = rngs[S_SUBS]
    when = t0 + r.integers(0, DAY_S, n)
    resume = (u["status"] == 1) & (u["resume_day"] == day)
    u["status"][resume] = 0
    u["paused_at"][resume] = -1
    u["sub_updated_at"][resume] = when[resume]
    draw = r.random(n)
    cancel = (u["status"] < 2) & (draw < m.sigmoid(u["eta"]))
    u["status"][cancel] = 2
    u["cancelled_at"][cancel] = when[cancel]
    u["cancelled_day"][cancel] = day
    u["sub_updated_at"][cancel] = when[cancel]
    draw = r.random(n)
    pause = (u["status"] == 0) & (draw < 0.0015)
    u["status"][pause] = 1
    u["paused_at"][pause] = when[pause]
    u["resume_day"][pause] = day + r.integers(7, 31, n)[pause]
    u["sub_updated_at"][pause] = when[pause]
    draw = r.random(n)
    change = (u["status"] == 0) & (draw < 0.002) & (u["sub_started_day"] < day)
    target = np.clip(u["plan_id"] + np.where(engagement > 0.5, 1, -1), 1, 3)
    change &= target != u["plan_id"]
    u["plan_id"][change] = target[change]
    u["sub_updated_at"][change] = when[change]

    # 5. billing
    payments = _billing_day(state, rngs[S_BILLING], day, t0)

    # 6. support tickets
    tickets = _tickets_day(state, rngs[S_TICKETS], day, t0, engagement)

    # 7. viewing sessions
    sessions = _sessions_day(state, rngs[S_SESSIONS], day, t0, engagement)

    # 8. end of day: the hazard for tomorrow, and the truth behind it
    coef = m.BASE_COEFFICIENTS
    if cfg.concept_drift_start is not None and day >= cfg.day_index(cfg.concept_drift_start):
        coef = m.SHIFTED_COEFFICIENTS
    failed = (day - u["last_fail_day"] < m.LABEL_WINDOW_DAYS).astype(np.float64)
    ticket = (day - u["last_ticket_day"] < m.LABEL_WINDOW_DAYS).astype(np.float64)
    price = price_usd(state, u["plan_id"])
    tenure = (day - u["sub_started_day"]).astype(np.float64)
    eta = m.churn_eta(coef, engagement, failed, ticket, price, tenure)
    alive = u["status"] < 2
    u["eta"] = np.where(alive, eta, -np.inf)
    truth = pd.DataFrame(
        {
            "user_id": u["user_id"][alive],
            "day": np.full(int(alive.sum()), day, dtype=np.int32),
            "p_churn_30d": m.churn_probability_30d(eta[alive]),
            "engagement": engagement[alive],
            "failed_payment_30d": failed[alive],
            "ticket_30d": ticket[alive],
            "price_usd": price[alive],
            "tenure_days": tenure[alive],
        }
    )
    state.last_day = day
    return DayOutput(sessions=sessions, payments=payments, tickets=tickets, truth=truth)


def _catalogue_day(state: SimState, r: np.random.Generator, day: int, t0: int) -> None:
    cfg = state.config
    # as many releases as licences run out, on average (see model.LICENCE_DAYS)
    n_new = r.poisson(cfg.n_shows / m.LICENCE_DAYS)
    if n_new:
        shows, episodes = new_shows(
            r, state.counters["next_show"], n_new, np.full(n_new, day), day_epoch(cfg, 0)
        )
        episodes = number_episodes(episodes, state.counters["next_episode"])
        state.counters["next_show"] += n_new
        state.counters["next_episode"] += len(episodes)
        state.shows = pd.concat([state.shows, shows], ignore_index=True)
        state.episodes = pd.concat([state.episodes, episodes], ignore_index=True)
    # metadata edits: a corrected title, an added cast member, a re-rated show
    edit = np.flatnonzero(r.random(len(state.shows)) < 0.003)
    if len(edit):
        stamps = t0 + r.integers(0, DAY_S, len(edit))
        shows = state.shows.copy()
        shows.loc[edit, "updated_at"] = np.maximum(shows.loc[edit, "updated_at"].to_numpy(), stamps)
        shows.loc[edit, "maturity_rating"] = [("PG-13", "R", "TV-MA")[i % 3] for i in edit]
        state.shows = shows


def _billing_day(state: SimState, r: np.random.Generator, day: int, t0: int) -> pd.DataFrame:
    """Charges on each subscription's monthly anniversary, retries, refunds."""
    u = state.users
    n = state.n_users
    when = t0 + r.integers(0, DAY_S, n)
    draw = r.random(n)
    due = (
        (u["status"] == 0)
        & ((day - u["sub_started_day"]) % 30 == 0)
        & (u["sub_started_day"] <= day)
    )
    retry = (u["retry_day"] == day) & (u["status"] < 2)
    charge = due | retry
    fail_p = np.where(retry, np.minimum(1.0, u["pay_risk"] * 1.5), u["pay_risk"])
    failed = charge & (draw < fail_p)
    amount = _local_price_minor(state, u["plan_id"], u["country"])
    u["last_fail_day"][failed] = day
    u["retry_day"] = np.where(retry, -1, u["retry_day"])
    u["retry_day"][failed & due] = day + 3
    refund_due = u["refund_day"] == day
    refund_draw = r.random(n)
    new_refund = charge & ~failed & (refund_draw < 0.01) & (u["refund_day"] < day)
    rows = []
    idx_charge = np.flatnonzero(charge)
    rows.append(
        pd.DataFrame(
            {
                "user_idx": idx_charge,
                "type": "charge",
                "status": np.where(failed[idx_charge], "failed", "succeeded"),
                "amount_minor": amount[idx_charge],
                "created_at": when[idx_charge],
                "failure_reason": np.where(
                    failed[idx_charge],
                    np.array(["card_declined", "insufficient_funds", "expired_card"])[
                        idx_charge % 3
                    ],
                    "",
                ),
            }
        )
    )
    idx_refund = np.flatnonzero(refund_due)
    rows.append(
        pd.DataFrame(
            {
                "user_idx": idx_refund,
                "type": "refund",
                "status": "succeeded",
                "amount_minor": -u["refund_amount"][idx_refund],
                "created_at": when[idx_refund],
                "failure_reason": "",
            }
        )
    )
    u["refund_day"][refund_due] = -1
    u["refund_day"][new_refund] = day + r.integers(1, 6, n)[new_refund]
    u["refund_amount"][new_refund] = amount[new_refund]
    out = pd.concat(rows, ignore_index=True).sort_values(["created_at", "user_idx"], kind="stable")
    out["payment_key"] = r.integers(0, 2**62, len(out))
    return out.reset_index(drop=True)


def _local_price_minor(state: SimState, plan_id: np.ndarray, country: np.ndarray) -> np.ndarray:
    usd = price_usd(state, plan_id)
    out = np.zeros(len(plan_id), dtype=np.int64)
    for ci, code in enumerate(m.COUNTRIES):
        cur = m.CURRENCY[code]
        sel = country == ci
        local = usd[sel] * m.FX_PER_USD[cur]
        if m.MINOR_EXPONENT[cur] == 0:
            out[sel] = np.round(local / 10) * 10
        else:
            out[sel] = np.floor(local) * 100 + 99
    return out


def _tickets_day(
    state: SimState, r: np.random.Generator, day: int, t0: int, engagement: np.ndarray
) -> pd.DataFrame:
    u = state.users
    n = state.n_users
    recent_fail = day - u["last_fail_day"] < 14
    rate = 0.008 * np.exp(-0.5 * engagement) * (1 + 6 * recent_fail) * (u["status"] < 2)
    count = r.poisson(rate)
    idx = np.repeat(np.arange(n), count)
    k = len(idx)
    # category odds: billing after a failed payment, cancellation when disengaged
    logits = np.zeros((k, len(m.TICKET_CATEGORIES)))
    logits[:, 0] += 2.5 * recent_fail[idx]
    logits[:, 4] += np.clip(-1.2 * engagement[idx], -1, 3) - 0.8
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    category = (r.random((k, 1)) < probs.cumsum(axis=1)).argmax(axis=1)
    u["last_ticket_day"][idx] = day
    return pd.DataFrame(
        {
            "user_idx": idx,
            "category": category,
            "created_at": t0 + r.integers(0, DAY_S, k),
            "template": r.integers(0, 4, k),
            "opener": r.integers(0, len(m.TICKET_OPENERS), k),
            "closer": r.integers(0, len(m.TICKET_CLOSERS), k),
            "channel": r.integers(0, 2, k),
            "ticket_key": r.integers(0, 2**62, k),
        }
    )


def _pick_shows(state: SimState, r: np.random.Generator, day: int, idx: np.ndarray) -> np.ndarray:
    """The show of each session of users `idx`: a genre from the user's taste, a film or a
    series (model.MOVIE_SHARE), then one of that genre and kind on offer, by popularity
    boosted while it is new. The kind never depends on what the catalogue holds."""
    shows = state.shows
    k = len(idx)
    age = day - shows["release_day"].to_numpy()
    offered = np.flatnonzero((age >= 0) & (age < m.LICENCE_DAYS))
    genre_of = shows["primary_genre"].to_numpy()[offered]
    movie_of = shows["is_movie"].to_numpy()[offered]
    weight = shows["popularity"].to_numpy()[offered] * (
        1.0 + m.RELEASE_BOOST * np.exp(-age[offered] / m.BOOST_DAYS)
    )
    genre = (r.random((k, 1)) < state.taste[idx].cumsum(axis=1)).argmax(axis=1)
    movie = r.random(k) < m.MOVIE_SHARE
    pick = r.random(k)
    show_pos = np.zeros(k, dtype=np.int64)
    for g in range(len(m.GENRES)):
        for kind in (False, True):
            sel = (genre == g) & (movie == kind)
            if not sel.any():
                continue
            # nothing of that genre and kind on offer: that kind in any genre, then anything
            candidates = np.flatnonzero((genre_of == g) & (movie_of == kind))
            if len(candidates) == 0:
                candidates = np.flatnonzero(movie_of == kind)
            if len(candidates) == 0:
                candidates = np.arange(len(offered))
            cdf = weight[candidates].cumsum()
            cdf /= cdf[-1]
            chosen = np.minimum(np.searchsorted(cdf, pick[sel]), len(candidates) - 1)
            show_pos[sel] = candidates[chosen]
    return offered[show_pos]


def _sessions_day(
    state: SimState, r: np.random.Generator, day: int, t0: int, engagement: np.ndarray
) -> pd.DataFrame:
    """Viewing sessions: who watches, what (taste x popularity), when, for how long."""
    cfg = state.config
    u = state.users
    n = state.n_users
    rate = np.exp(-0.45 + 0.55 * engagement)
    rate = np.where(u["status"] == 0, rate, np.where(u["status"] == 1, 0.05 * rate, 0.0))
    if cfg.spike_start is not None:
        s0 = cfg.day_index(cfg.spike_start)
        if s0 <= day < s0 + cfg.spike_days:
            rate = rate * cfg.spike_factor
    count = r.poisson(rate)
    idx = np.repeat(np.arange(n), count)
    k = len(idx)
    shows = state.shows
    show_idx = _pick_shows(state, r, day, idx)
    eps = state.episodes
    ep_show = eps["show_id"].to_numpy()
    show_ids = shows["show_id"].to_numpy()[show_idx]
    # episodes of a show are contiguous in the episodes table
    first_ep = pd.Series(np.arange(len(eps))).groupby(ep_show).min()
    n_eps = pd.Series(ep_show).value_counts()
    ep_first = first_ep.reindex(show_ids).to_numpy()
    ep_count = n_eps.reindex(show_ids).to_numpy()
    ep_pos = ep_first + np.floor(r.random(k) ** 1.5 * ep_count).astype(np.int64)
    duration = eps["duration_s"].to_numpy()[ep_pos]
    abandon = r.random(k) < 0.25
    completion = np.where(abandon, r.beta(1.0, 4.0, k), r.beta(6.0, 1.2, k))
    length = np.maximum(30, (completion * duration).astype(np.int64))
    # local evening peak, stamped in UTC
    offset = np.array([m.UTC_OFFSET_MIN[c] for c in m.COUNTRIES])[u["country"][idx]] * 60
    evening = r.random(k) < 0.7
    local = np.where(evening, r.normal(20.5 * 3600, 1.6 * 3600, k), r.uniform(0, DAY_S, k))
    start = t0 + (np.mod(local - offset, DAY_S)).astype(np.int64)
    # on the signup day, viewing starts after the account exists
    start = np.maximum(start, u["signup_at"][idx] + 60)
    device_weights, own_share = m.DEVICE_WEIGHTS, 0.7
    if cfg.drift_kind == "device_mix" and cfg.drift_start and day >= cfg.day_index(cfg.drift_start):
        device_weights, own_share = m.DEVICE_WEIGHTS_SHIFTED, 0.4  # viewing moves to phones
    own_device = r.random(k) < own_share
    device = np.where(own_device, u["device"][idx], r.choice(len(m.DEVICES), k, p=device_weights))
    network = np.where(
        device == 1, r.choice(3, k, p=[0.5, 0.5, 0.0]), r.choice(3, k, p=[0.7, 0.0, 0.3])
    )
    has_pause = r.random(k) < 0.25
    pause_at = (r.random(k) * length).astype(np.int64)
    pause_gap = r.exponential(180.0, k).astype(np.int64) + 5
    return pd.DataFrame(
        {
            "session_key": r.integers(0, 2**62, k),
            "user_idx": idx,
            "show_idx": show_idx,
            "episode_pos": ep_pos,
            "start": start,
            "length": length,
            "device": device,
            "os_pick": r.integers(0, 3, k),
            "network": network,
            "new_app": day >= u["adopt_day"][idx],
            "bitrate": np.where(network == 1, r.integers(1200, 3200, k), r.integers(3500, 9000, k)),
            "has_pause": has_pause,
            "pause_at": pause_at,
            "pause_gap": pause_gap,
            "day": day,
        }
    )
