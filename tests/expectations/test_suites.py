"""Every suite passes on the built test company and fails on a corrupted staged copy.

Each case stages a copy of one asset in schema ``audit`` (the write-audit-publish path:
``validate(..., relations={asset: staged})``), checks the untouched copy passes, then breaks
one thing the asset's builder promises to catch and checks that exactly that kind of
expectation fails, as critical or as a warning.
"""

from __future__ import annotations

import pytest

from expectations.run import validate
from tests.expectations.conftest import stage

LAYERS_COVERED = {
    "raw.events_lines",
    "staging.stg_billing__payments",
    "core.dim_users",
    "features.fs_churn__user_daily",
    "features.fs_recs__co_watch",
    "features.label_churn__user_daily",
    "ml.churn_predictions",
    "ml.recommendations",
}


def test_every_suite_passes_on_the_built_company(warehouse):
    report = validate(warehouse, record=False, data_docs=False)
    assert not report.critical_failed, report.lines()
    # staging.stg_ml__* read ml.* as of the last dbt build: built before the fixture's
    # predictions existed they are empty (a warning) until the next build picks them up
    warned = [s.asset for s in report.suites if not s.success]
    assert all(a.startswith("staging.stg_ml__") for a in warned), report.lines()
    ran = {s.asset for s in report.suites if not s.skipped}
    assert ran >= LAYERS_COVERED
    assert all(s.evaluated > 0 for s in report.suites if not s.skipped)
    assert not [s.asset for s in report.suites if s.skipped]


# (asset, select over {src}, fixes over {t}, expectation type expected to fail, critical)
CASES = [
    # raw: required fields and the declared schema
    ("raw.events_lines", None, ["update {t} set _file = null where _line_no = 1"],
     "expect_column_values_to_not_be_null", True),
    ("raw.oltp_users", "select * exclude (email) from {src}", [],
     "expect_table_columns_to_match_set", True),
    ("raw.tickets_lines", None, ["delete from {t}"], "expect_table_row_count_to_be_between", False),
    # staging: value sets, natural keys, types
    ("staging.stg_billing__payments", None,
     ["update {t} set currency = 'XXX' where payment_id = (select min(payment_id) from {t})"],
     "expect_column_values_to_be_in_set", True),
    ("staging.stg_oltp__users", None, ["insert into {t} select * from {t} limit 1"],
     "expect_compound_key_to_be_unique", True),
    ("staging.stg_events__viewing_events",
     "select * replace (occurred_at::varchar as occurred_at) from {src}", [],
     "expect_column_values_to_be_of_type", True),
    # core: contract and non-emptiness
    ("core.dim_users", None, ["delete from {t}"], "expect_table_row_count_to_be_between", True),
    ("core.fct_payments", "select * replace (amount_usd::double as amount_usd) from {src}", [],
     "expect_column_values_to_be_of_type", True),
    # features: ranges, one row per entity and feature_timestamp, registered version, nulls
    ("features.fs_churn__user_daily", None,
     ["update {t} set watch_minutes_7d = -1 where user_id = (select min(user_id) from {t})"],
     "expect_column_values_to_be_between", True),
    ("features.fs_churn__user_daily", None, ["insert into {t} select * from {t} limit 3"],
     "expect_compound_key_to_be_unique", True),
    ("features.fs_churn__user_daily", None,
     ["update {t} set feature_set_version = 'unregistered' where as_of_date = (select max(as_of_date) from {t})"],
     "expect_column_values_to_be_in_set", True),
    ("features.fs_churn__user_daily", None,
     ["update {t} set country = null where user_id % 2 = 0"],
     "expect_column_values_to_not_be_null", False),
    ("features.fs_recs__show_popularity", None,
     ["update {t} set viewers_7d = viewers_30d + 1 where show_id = (select min(show_id) from {t})"],
     "expect_column_pair_values_a_to_be_greater_than_b", True),
    ("features.fs_recs__user_genre_affinity", None,
     ["update {t} set share_of_watch_90d = 1.5 where user_id = (select min(user_id) from {t})"],
     "expect_column_values_to_be_between", True),
    ("features.fs_recs__co_watch", None,
     ["update {t} set co_viewers = 1 where show_id = (select min(show_id) from {t})"],
     "expect_column_values_to_be_between", True),
    # labels
    ("features.label_churn__user_daily", None,
     ["update {t} set label_window_end = event_timestamp - interval 1 day where user_id = (select min(user_id) from {t})"],
     "expect_column_pair_values_a_to_be_greater_than_b", True),
    ("features.label_churn__user_daily", None, ["update {t} set churned_within_30d = false"],
     "expect_column_distinct_values_to_contain_set", False),
    # predictions
    ("ml.churn_predictions", None,
     ["update {t} set churn_probability = 1.5, is_high_risk = true where user_id = (select min(user_id) from {t})"],
     "expect_column_values_to_be_between", True),
    ("ml.churn_predictions", None, ["insert into {t} select * from {t} limit 2"],
     "expect_compound_key_to_be_unique", True),
    ("ml.churn_predictions", None,
     ["update {t} set is_high_risk = not is_high_risk where user_id = (select min(user_id) from {t})"],
     "unexpected_rows_expectation", True),
    ("ml.recommendations", None, ["update {t} set rank = 0 where rank = 1"],
     "expect_column_values_to_be_between", True),
    ("ml.recommendations", None,
     ["update {t} set show_id = 'not-a-show' where rank = 10"],
     "unexpected_rows_expectation", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("asset", "select", "fixes", "failing", "critical"),
    CASES,
    ids=[
        f"{c[0]}-{c[3].removeprefix('expect_')}-{'critical' if c[4] else 'warning'}" for c in CASES
    ],
)
def test_suite_passes_then_fails_on_a_corrupted_copy(
    warehouse, asset, select, fixes, failing, critical
):
    staged = stage(warehouse, asset, select or "select * from {src}")
    clean = validate(warehouse, [asset], relations={asset: staged}, record=False, data_docs=False)
    [suite] = clean.suites
    assert suite.relation == staged
    if select is None:  # an untouched copy passes; a changed schema is tested only broken
        assert suite.success, suite.line()

    stage(warehouse, asset, select or "select * from {src}", *fixes)
    report = validate(warehouse, [asset], relations={asset: staged}, record=False, data_docs=False)
    [suite] = report.suites
    failed = suite.failed_critical if critical else suite.failed_warning
    assert any(label.startswith(failing + "(") for label in failed), suite.line()
    assert report.critical_failed is critical, suite.line()
    if not critical:
        assert not report.success
