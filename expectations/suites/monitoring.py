"""The monitoring suite: drift checks whose parameters come from a reference sample.

`monitoring_suite(reference, current_size=m)` turns the churn champion's training features
(the reference `loopline monitor` compares with, one row per user) into Great Expectations
that a window of `m` current rows is validated with, so drift shows in Data Docs and in
``monitoring.validation_results`` beside data quality (asset ``monitoring.<feature set>``,
see :func:`asset_name`). Every expectation is a **warning**: the suite never blocks
publication; `ml.drift.detect_drift` stays the calibrated test and the retraining trigger.

Per column (``ml.drift.reference_profile`` derives the bounds; kinds as in ``ml.drift``):

- numeric: ``expect_column_mean_to_be_between``,
  ``expect_column_quantile_values_to_be_between`` at `QUANTILES`, and
  ``expect_column_kl_divergence_to_be_less_than`` on bins fixed from the reference
  (:func:`numeric_partition`: one bin per value for a column with at most `DISCRETE_VALUES`
  distinct values, else the distinct reference deciles; the outer bins are open, so a value
  beyond the reference's range counts in the first or last bin).
  No standard-deviation bound: on heavy-tailed columns (watch minutes) the normal
  approximation of its sampling error is too narrow (the profile's ``std_bounds`` raised an
  alarm in 12 of 100 windows without drift here); the quantiles and the KL see scale changes;
- categorical: ``expect_column_values_to_be_in_set`` (the reference's categories, ``mostly``
  leaving room for rare categories the reference missed by chance) and the KL expectation on
  the reference's category shares;
- every column: ``expect_column_values_to_not_be_null`` with ``mostly`` = 1 - the largest null
  rate that is not both significant and large.

The rule for the thresholds
---------------------------
Each bound is the **wider** of two bands, mirroring drift's "significant *and* large enough":

- *statistical*: what sampling noise alone moves a statistic of `m` current rows against a
  reference of `n` rows, at level ``alpha / K``, where K is the number of bounded statistics in
  the suite (Bonferroni). With no drift the whole suite then passes with probability of about
  1 - alpha or more: the mean band is z * sd * sqrt(1/n + 1/m) (normal approximation); the
  quantile bands are one Kolmogorov-Smirnov band for all quantiles of a column
  (``kolmogi(alpha / K) * sqrt(1/n + 1/m)`` in probability, mapped through the reference's
  quantile function); the KL thresholds use 2 n_eff KL ~ chi-square(k - 1), n_eff = nm/(n + m),
  for two samples of one distribution over k bins;
- *practical*: what a shift of drift's ``min_effect`` moves. Numeric mean and quantiles:
  ``min_effect * sd`` (a pure shift whose W1/sd equals the threshold); categorical KL and the
  numeric KL on the reference's bins: ``4 ln 2 * min_effect**2``, the KL (nats) between two
  distributions a Jensen-Shannon distance of ``min_effect`` bits apart; null rate and unseen
  categories: the rate whose JS distance from the reference's reaches the threshold.

So a window without drift passes, and a shift the drift module flags (significant after its
correction, effect at least ``min_effect``) fails once the window is large enough for the
shift to be significant at ``alpha / K`` too. With n = 5,000, m = 2,000, the monitor's
``min_effect`` 0.1 and 25 features: a 0.3 sd mean shift lands three times outside the mean
band (+-0.1 sd), outside the median's band (+-0.14 sd) and at a decile KL of 0.043 > 0.028; a
20 % price rise on ``plan_price_usd`` moves the mean by 0.7 sd and the standard plan's rows
into the premium plan's bin (KL about 0.77). On the 300-user test company the statistical
bands dominate (about +-0.3 sd for the mean): a shift has to be larger to show, as it has for
``detect_drift``. Measured (GX itself, 20 churn-like features, docs/monitoring.md): no alarm in
100 windows without drift at n = 5,000 / m = 2,000, 6 in 100 at n = m = 300; a 0.3 sd shift
failed in 40 of 40 windows at 5,000 / 2,000.

The suite is a pure function of its inputs; `expectations.run.validate_frame` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.expectation import Expectation
from scipy import special

from expectations.results import MONITORING_ASSET_SCHEMA
from expectations.suites import warning
from ml.drift import NULL_RATE, NUMERIC, reference_profile

#: The schema part of a monitoring suite's asset name (`loopline validate` has no such schema).
SCHEMA = MONITORING_ASSET_SCHEMA
#: Quantile levels the quantile expectation bounds (a subset of ml.drift.PROFILE_QUANTILES).
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Numeric columns with at most this many distinct reference values get one KL bin per value.
DISCRETE_VALUES = 20
#: Otherwise the KL bins are the reference's deciles (fewer when deciles coincide).
KL_BINS = 10
#: A KL bin expects this many rows on both sides (as ml.drift pools chi-square cells).
MIN_EXPECTED_COUNT = 5.0
#: Bounded statistics per column, by kind (mean, quantiles, KL, nulls; set, KL, nulls).
CHECKS = {NUMERIC: 4, "categorical": 3}
# bounds are widened by this relative amount: a mean of identical floats may differ in the last bit
_EPS = 1e-9


def asset_name(feature_set: str) -> str:
    """``monitoring.<table>`` for a feature set relation (``features.fs_x`` or ``fs_x``)."""
    return f"{SCHEMA}.{feature_set.rsplit('.', 1)[-1]}"


def is_monitoring_asset(asset: str) -> bool:
    return asset.startswith(f"{SCHEMA}.")


def monitoring_suite(
    reference: pd.DataFrame,
    *,
    current_size: int,
    alpha: float = 0.05,
    min_effect: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
) -> list[Expectation]:
    """Warnings for every column of `reference`, bounds derived for `current_size` rows.

    `alpha` is the suite's false-alarm rate (split over its statistics, see the module
    docstring); `min_effect` takes ``ml.drift``'s keys (kinds or column names); columns in
    `ignore` are checked and say so in their ``meta`` (the monitor shows them but never
    retrains on them).
    """
    first = reference_profile(
        reference, current_size=current_size, alpha=alpha, min_effect=min_effect
    )
    kinds = {c: entry["kind"] for c, entry in first["columns"].items()}
    checks = sum(CHECKS[kind] for kind in kinds.values())
    each = alpha / checks
    profile = reference_profile(
        reference, current_size=current_size, alpha=each, min_effect=min_effect
    )
    thresholds = profile["min_effect"]
    ignored = set(ignore)
    out: list[Expectation] = []
    for column, entry in profile["columns"].items():
        effect = float(thresholds.get(column, thresholds[entry["kind"]]))
        context = {
            "reference_rows": profile["rows"],
            "current_rows": current_size,
            "alpha": each,
            "min_effect": effect,
            **({"ignored": True} if column in ignored else {}),
        }
        out += _null_rate(column, entry, context, float(thresholds[NULL_RATE]))
        if not entry["rows_non_null"]:
            continue
        if entry["kind"] == NUMERIC:
            values = pd.to_numeric(reference[column], errors="coerce").dropna().to_numpy(float)
            out += numeric_checks(column, entry, values, each, effect, current_size, context)
        else:
            out += categorical_checks(column, entry, context)
    return out


def numeric_checks(
    column: str,
    entry: Mapping[str, Any],
    values: np.ndarray,
    alpha: float,
    effect: float,
    current_size: int,
    context: Mapping[str, Any],
) -> list[Expectation]:
    """Mean, quantiles and binned KL of one numeric column."""
    mean, sd = float(entry["mean"]), float(entry["std"])
    lo, hi = _widen(*entry["mean_bounds"])
    out = [
        _warn(
            gxe.ExpectColumnMeanToBeBetween(column=column, min_value=lo, max_value=hi),
            "reference mean +- max(z sd sqrt(1/n + 1/m), min_effect sd)",
            context,
            reference_mean=mean,
            reference_std=sd,
        )
    ]
    ranges = [list(_widen(*entry["quantile_bounds"][f"{q:g}"])) for q in QUANTILES]
    out.append(
        _warn(
            gxe.ExpectColumnQuantileValuesToBeBetween(
                column=column,
                quantile_ranges={"quantiles": list(QUANTILES), "value_ranges": ranges},
            ),
            "reference quantile at level -+ the KS distance, or -+ min_effect sd",
            context,
            reference_quantiles={f"{q:g}": entry["quantiles"][f"{q:g}"] for q in QUANTILES},
        )
    )
    partition = numeric_partition(values, current_size)
    if partition is not None:
        threshold = kl_threshold(
            len(partition["weights"]), values.size, current_size, alpha, effect
        )
        out.append(
            _warn(
                gxe.ExpectColumnKLDivergenceToBeLessThan(
                    column=column, partition_object=partition, threshold=threshold
                ),
                "KL(current || reference) on the reference's bins: max(chi-square critical "
                "value / (2 n_eff), 4 ln2 min_effect^2)",
                context,
            )
        )
    return out


def categorical_checks(
    column: str, entry: Mapping[str, Any], context: Mapping[str, Any]
) -> list[Expectation]:
    """The category set and the KL divergence on the reference's category shares."""
    categories = list(entry["categories"])
    weights = [float(entry["proportions"][str(c)]) for c in categories]
    return [
        _warn(
            gxe.ExpectColumnValuesToBeInSet(
                column=column,
                value_set=categories,
                mostly=_mostly(float(entry["unseen_share_max"])),
            ),
            "reference categories; unseen ones at most the unseen-share bound",
            context,
        ),
        _warn(
            gxe.ExpectColumnKLDivergenceToBeLessThan(
                column=column,
                partition_object={"values": categories, "weights": weights},
                threshold=float(entry["kl_threshold"]),
                tail_weight_holdout=float(entry["tail_weight_holdout"]),
            ),
            "KL(current || reference) on category shares: max(chi-square critical value / "
            "(2 n_eff), 4 ln2 min_effect^2)",
            context,
        ),
    ]


def numeric_partition(
    values: np.ndarray, current_size: int | None = None
) -> dict[str, list[float]] | None:
    """A GX continuous partition object from reference values (None: a single bin).

    Bins as ``numpy.histogram`` (GX's pandas histogram) counts them, ``[a, b)``; the first
    starts at -inf and the last ends at +inf, so every value has a bin. A column with at most
    `DISCRETE_VALUES` distinct values gets one bin per value (edges halfway between values);
    other columns get the distinct reference deciles as edges. Neighbouring bins are then
    merged until each expects `MIN_EXPECTED_COUNT` rows in the smaller of the reference and a
    window of `current_size` rows (the chi-square threshold needs it; rare count values
    otherwise raise false alarms).

    Open outer bins rather than a ``tail_weight_holdout``: a tail cell with an expected weight
    of about 1/n made the KL of windows without drift exceed its chi-square threshold four to
    seven times more often than the level says (measured, n = m = 300 to 5,000).
    """
    distinct = np.unique(values)
    if distinct.size <= DISCRETE_VALUES:
        inner = (distinct[:-1] + distinct[1:]) / 2
    else:
        levels = np.linspace(0.0, 1.0, KL_BINS + 1)[1:-1]
        inner = np.unique(np.quantile(values, levels, method="inverted_cdf"))
    counts, _ = np.histogram(values, np.concatenate([[-np.inf], inner, [np.inf]]))
    smaller = min(values.size, current_size or values.size)
    need = MIN_EXPECTED_COUNT * values.size / smaller  # reference rows per bin
    kept: list[float] = []  # inner edges between the merged bins
    merged: list[int] = []  # reference rows per merged bin
    running = 0
    for index, count in enumerate(counts[:-1]):
        running += int(count)
        if running >= need:
            kept.append(float(inner[index]))
            merged.append(running)
            running = 0
    running += int(counts[-1])
    if running >= need or not merged:
        merged.append(running)
    else:  # a short last bin joins its neighbour
        merged[-1] += running
        kept.pop()
    if len(merged) < 2:
        return None
    weights = np.array(merged, dtype=float) / values.size
    edges = [-math.inf, *kept, math.inf]
    return {"bins": edges, "weights": [float(w) for w in weights]}


def kl_threshold(bins: int, n: int, m: int, alpha: float, effect: float) -> float:
    """The KL (nats) above which a window of `m` rows counts as moved from `n` reference rows:
    the wider of chi-square(bins - 1)'s upper `alpha` point / (2 n_eff) and the KL between two
    distributions a JS distance of `effect` bits apart."""
    n_eff = 1.0 / (1.0 / n + 1.0 / m)
    statistical = float(special.chdtri(max(bins - 1, 1), alpha)) / (2.0 * n_eff)
    return max(statistical, 4.0 * math.log(2.0) * effect**2)


def _null_rate(
    column: str, entry: Mapping[str, Any], context: Mapping[str, Any], effect: float
) -> list[Expectation]:
    limit = float(entry["null_rate_max"])
    if limit >= 1.0:
        return []
    return [
        _warn(
            gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=_mostly(limit)),
            "null rate at most the reference's plus max(z band, JS distance min_effect)",
            {**context, "min_effect": effect},
            reference_null_rate=float(entry["null_rate"]),
        )
    ]


def _mostly(share_allowed: float) -> float:
    # GX compares the share of expected values with `mostly`; a hair below keeps the bound
    return max(0.0, 1.0 - share_allowed - _EPS)


def _widen(lo: float, hi: float) -> tuple[float, float]:
    return lo - _EPS * (1.0 + abs(lo)), hi + _EPS * (1.0 + abs(hi))


def _warn(
    expectation: Expectation, rule: str, context: Mapping[str, Any], **reference: Any
) -> Expectation:
    marked = warning(expectation, f"drift vs reference: {rule}")
    marked.meta = {**(marked.meta or {}), **context, **reference}
    return marked
