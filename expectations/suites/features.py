"""Feature sets (``features.fs_*``) and labels (``features.label_*``).

Every feature set row carries its entity key, ``feature_timestamp``, ``created_at`` and
``feature_set_version`` (see docs/architecture.md), so the generic :func:`feature_set` checks,
from the declarations alone:

- the contract (exact columns, types) and the declared tests;
- keys and bookkeeping filled: entity key, ``feature_timestamp``, ``created_at``,
  ``feature_set_version`` (critical);
- one row per entity, ``feature_timestamp`` and version (critical; the entity key is the
  declared ``unique_combination`` minus the as-of day and the version);
- every version present in the table is registered in ``features.feature_sets`` (critical);
- each feature column's null rate at most the policy's (warning).

The builders below add each feature set's ranges, which follow from its definition (a count
is never negative, a share lies in [0, 1], a 30-day count of days is at most 30).
"""

from __future__ import annotations

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from expectations.declared import DeclaredRelation, warehouse_relations
from expectations.suites import (
    BuildContext,
    between,
    builder,
    critical,
    declared_meta,
    declared_tests,
    dedupe,
    non_negative,
    not_null,
    row_count,
    schema,
    types,
    unique_key,
    warning,
)

BOOKKEEPING = ("as_of_date", "feature_timestamp", "created_at", "feature_set_version")


def feature_relation(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """The layer's default: a label table, a feature set, or a plain features mart."""
    if relation.name.startswith("label_"):
        return labels(relation, ctx)
    if "feature_set_version" in relation.columns():
        return feature_set(relation, ctx)
    return _contract(relation)


def _contract(relation: DeclaredRelation) -> list[Expectation]:
    return [
        *row_count(relation, must_have_rows=True),
        *schema(relation, exact=relation.contract),
        *types(relation, conventions=True),
        *declared_tests(relation),
        *declared_meta(relation),
    ]


def entity_key(relation: DeclaredRelation) -> list[str]:
    """The entity key: the declared unique combination without the as-of day and version."""
    for test in relation.tests_named("unique_combination"):
        columns = [str(c) for c in test.kwargs.get("columns", [])]
        if "feature_set_version" in columns or relation.name.startswith("label_"):
            return [c for c in columns if c not in BOOKKEEPING]
    return []


def registered_versions(ctx: BuildContext, relation: DeclaredRelation) -> list[str] | None:
    """Versions the registry lists for this relation (None: no registry): the one beside the
    validated table, else the published ``features.feature_sets`` (a copy staged on its own).
    Beside it first: a colour's build registers a new version in its own schema, which the
    published registry lists only once that colour is published."""
    beside = ctx.physical.split(".", 1)[0]
    schema = next(
        (s for s in (beside, "features") if "feature_sets" in warehouse_relations(ctx.con, s)),
        None,
    )
    if schema is None:
        return None
    rows = ctx.con.execute(
        f'select distinct feature_set_version from "{schema}".feature_sets '
        "where relation_name like ? order by 1",
        [f'%"{relation.name}"'],
    ).fetchall()
    return [str(version) for (version,) in rows] or None


def feature_set(
    relation: DeclaredRelation, ctx: BuildContext, entity: list[str] | None = None
) -> list[Expectation]:
    """The checks every feature set gets from its declaration (see the module docstring)."""
    entity = entity or entity_key(relation)
    out = _contract(relation)
    out += not_null(
        [*entity, "feature_timestamp", "created_at", "feature_set_version"],
        "feature store row: key and bookkeeping",
    )
    if entity:
        out.append(
            unique_key(
                [*entity, "feature_timestamp", "feature_set_version"],
                "one row per entity, feature_timestamp and version",
            )
        )
    versions = registered_versions(ctx, relation)
    if versions is not None:
        out.append(
            critical(
                gxe.ExpectColumnValuesToBeInSet(column="feature_set_version", value_set=versions),
                "version registered in features.feature_sets",
            )
        )
    declared_null_rates = {
        c for c, meta in relation.column_meta.items() if "max_null_fraction" in meta
    }
    for column in relation.columns():
        if column in entity or column in BOOKKEEPING or column in declared_null_rates:
            continue
        out.append(
            warning(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=column, mostly=1.0 - ctx.policy.max_null_fraction
                ),
                f"null rate at most {ctx.policy.max_null_fraction:.0%}",
            )
        )
    return out


def labels(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """A label table: keys, one row per entity and as-of day, window after the features."""
    entity = entity_key(relation)
    label_columns = [
        c for c, t in relation.declared_types.items() if t.lower() == "boolean" and c not in entity
    ]
    out = _contract(relation)
    out += not_null([*entity, "as_of_date", "event_timestamp", *label_columns], "label row")
    if entity:
        out.append(unique_key([*entity, "as_of_date"], "one label per entity and as-of day"))
    if {"label_window_end", "event_timestamp"} <= set(relation.columns()):
        out.append(
            critical(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="label_window_end", column_B="event_timestamp"
                ),
                "the label window starts after the features end",
            )
        )
    for column in label_columns:
        out.append(
            warning(
                gxe.ExpectColumnDistinctValuesToContainSet(column=column, value_set=[True, False]),
                "both classes present",
            )
        )
    return dedupe(out)


@builder("features.fs_churn__user_daily")
def fs_churn__user_daily(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Churn features: engagement counts and minutes, recency, payments, tickets, plan."""
    counts = [
        c
        for c in relation.columns()
        if c.startswith(("watch_minutes_", "sessions_", "failed_payments_", "refunds_"))
        or c.endswith("tickets_30d")
    ]
    return dedupe(
        [
            *feature_set(relation, ctx),
            *non_negative(counts),
            *non_negative(
                [
                    "days_since_last_view",
                    "minutes_per_session_30d",
                    "genre_days_30d",
                    "plan_price_usd",
                    "tenure_days",
                    "log_tenure_months",
                ]
            ),
            between("active_days_30d", 0, 30, "days with a session among the last 30"),
            between("has_failed_payment_30d", 0, 1, "a 0/1 indicator"),
            between("has_ticket_30d", 0, 1, "a 0/1 indicator"),
            between("mobile_share_30d", 0, 1, "a share"),
            between("watch_trend_7d", -1, 1, "(a - b) / (a + b + 1) lies in (-1, 1)"),
        ]
    )


@builder("features.fs_recs__show_popularity")
def fs_recs__show_popularity(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Show popularity: viewer and session counts, freshness, rank."""
    return dedupe(
        [
            *feature_set(relation, ctx),
            *non_negative(["viewers_7d", "viewers_30d", "sessions_7d", "days_since_release"]),
            between("popularity_rank_7d", 1, None, "ranks start at 1"),
            critical(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="viewers_30d", column_B="viewers_7d", or_equal=True
                ),
                "the 30-day window contains the 7-day one",
            ),
        ]
    )


@builder("features.fs_recs__user_genre_affinity")
def fs_recs__user_genre_affinity(
    relation: DeclaredRelation, ctx: BuildContext
) -> list[Expectation]:
    """User-genre affinity: minutes, sessions and the genre's share of watch time."""
    return dedupe(
        [
            *feature_set(relation, ctx),
            *non_negative(["watch_minutes_90d", "sessions_90d"]),
            between("share_of_watch_90d", 0, 1, "a share"),
        ]
    )


@builder("features.fs_recs__co_watch")
def fs_recs__co_watch(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Co-watching: pairs watched by at least two users, P(other | this)."""
    return dedupe(
        [
            *feature_set(relation, ctx),
            between("co_viewers", 2, None, "a pair is kept when at least two users watched it"),
            between("co_watch_rate", 0, 1, "a conditional probability"),
        ]
    )


@builder("features.label_churn__user_daily")
def label_churn__user_daily(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Churn labels: one per user and as-of day, window after the features, both classes."""
    return labels(relation, ctx)
