"""Core marts (``core.*``): what models, reports and the online store read.

Marts carry enforced contracts, so their suite checks the exact column set and every
contract type, the declared tests (keys unique and not null, value sets), and that the mart
is not empty: an empty mart published would blank every reader.
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


def core_mart(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Contract (columns, types), declared tests and non-emptiness of one mart."""
    return dedupe(
        [
            *row_count(relation, must_have_rows=True),
            *schema(relation, exact=relation.contract),
            *types(relation, conventions=True),
            *declared_tests(relation),
            *declared_meta(relation),
        ]
    )
