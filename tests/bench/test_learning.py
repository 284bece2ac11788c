"""bench.learning's filter ceiling: the posterior of a latent engagement from daily counts."""

from __future__ import annotations

import numpy as np

from bench.learning import filter_engagement
from loopline.simulate import model as sim


def simulated_viewing(users: int, days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(true engagement, session counts), users x days, drawn as the simulator draws them;
    the second half of the users is first seen on day 20 (-1 before)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, sim.ENGAGEMENT_SD, users)
    wander = rng.normal(0.0, sim.WANDER_SD, users)
    engagement, counts = np.zeros((users, days)), np.zeros((users, days))
    for d in range(days):
        wander = sim.WANDER_DECAY * wander + rng.normal(0.0, sim.WANDER_STEP, users)
        engagement[:, d] = mu + wander
        counts[:, d] = rng.poisson(np.exp(-0.45 + 0.55 * engagement[:, d]))
    counts[users // 2 :, :20] = -1
    return engagement, counts


def test_the_filter_knows_engagement_as_well_as_it_says_and_better_than_a_week():
    users, days = 4_000, 80
    engagement, counts = simulated_viewing(users, days)
    prior_mean = np.zeros((users, 2))
    prior_var = np.tile([sim.ENGAGEMENT_SD**2, sim.WANDER_SD**2], (users, 1))
    mean, var = filter_engagement(counts, prior_mean, prior_var)
    assert np.isnan(mean[users // 2 :, :20]).all() and not np.isnan(mean[:, 20:]).any()
    last = days - 1
    error = mean[:, last] - engagement[:, last]
    # calibrated: the posterior variance is the squared error it makes; nearly unbiased (the
    # Laplace update keeps the posterior's mode, a little above its mean at low counts)
    assert abs(np.mean(error**2) / np.mean(var[:, last]) - 1) < 0.1
    assert abs(error.mean()) < 0.15
    # a long history knows more than a short one, and more than the last week's log rate
    assert var[: users // 2, last].mean() < var[users // 2 :, 25].mean()
    week = np.log((counts[:, last - 6 : last + 1].sum(axis=1) + 0.5) / 7)
    slope, intercept = np.polyfit(week, engagement[:, last], 1)
    assert np.mean(error**2) < 0.8 * np.mean((slope * week + intercept - engagement[:, last]) ** 2)
