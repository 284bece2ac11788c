"""Staging outputs: types, value sets and uniqueness of natural keys.

Staging models are 1:1 with their sources and are where types are decided, so their suite
checks that the declared columns exist, that the types the column names promise hold
(``is_``/``has_`` boolean, ``_at`` timestamp, ``_date`` date), and the declared tests:
``not_null``, ``unique`` natural keys, ``accepted_values``.
"""

from __future__ import annotations

from great_expectations.expectations.expectation import Expectation

from expectations.declared import DeclaredRelation
from expectations.suites import (
    BuildContext,
    declared_meta,
    declared_tests,
    dedupe,
    row_count,
    schema,
    types,
)


def staging_model(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Declared columns, conventional types, declared tests of one staging model."""
    return dedupe(
        [
            *row_count(relation, must_have_rows=False),
            *schema(relation, exact=relation.contract),
            *types(relation, conventions=True),
            *declared_tests(relation),
            *declared_meta(relation),
        ]
    )
