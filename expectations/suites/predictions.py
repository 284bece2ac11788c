"""What the loop writes back: churn scores and recommendations (``ml.*``).

These tables are written by ``loopline score`` (ml/churn/score.py, ml/recommender/score.py), declared as dbt
sources (columns only), and validated once they exist.
"""

from __future__ import annotations

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from expectations.declared import DeclaredRelation
from expectations.suites import (
    BuildContext,
    between,
    builder,
    critical,
    dedupe,
    not_null,
    row_count,
    schema,
    unique_key,
    warning,
)


@builder("ml.churn_predictions", layer="predictions")
def churn_predictions(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Scores in [0, 1], one row per user per as-of day and model version, flag = threshold."""
    return dedupe(
        [
            *row_count(relation, must_have_rows=True),
            *schema(relation, exact=False),
            *not_null(
                [
                    "user_id",
                    "as_of_date",
                    "churn_probability",
                    "is_high_risk",
                    "threshold",
                    "model_name",
                    "model_version",
                    "feature_set_version",
                    "scored_at",
                ],
                "a prediction names its user, day, model and feature set",
            ),
            between("churn_probability", 0, 1, "a probability"),
            between("threshold", 0, 1, "an operating threshold on a probability"),
            unique_key(
                ["user_id", "as_of_date", "model_name", "model_version"],
                "one row per user per as-of day and model version",
            ),
            critical(
                gxe.UnexpectedRowsExpectation(
                    unexpected_rows_query=(
                        "select * from {batch} "
                        "where is_high_risk <> (churn_probability >= threshold)"
                    ),
                    description="is_high_risk is churn_probability >= threshold",
                ),
                "the flag follows the threshold",
            ),
        ]
    )


@builder("ml.recommendations", layer="predictions")
def recommendations(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Ranked lists: ranks from 1, one show once per list, shows from the catalogue."""
    list_key = ["user_id", "as_of_date", "model_name", "model_version"]
    return dedupe(
        [
            *row_count(relation, must_have_rows=True),
            *schema(relation, exact=False),
            *not_null([*list_key, "rank", "show_id", "score"], "a recommendation row"),
            between("rank", 1, None, "ranks start at 1"),
            unique_key([*list_key, "rank"], "one show per rank of a list"),
            unique_key([*list_key, "show_id"], "a show appears once per list"),
            warning(
                gxe.UnexpectedRowsExpectation(
                    unexpected_rows_query=(
                        "select * from {batch} "
                        "where show_id not in (select show_id from core.dim_shows)"
                    ),
                    description="recommended shows are in core.dim_shows",
                ),
                "shows from the catalogue",
            ),
        ]
    )
