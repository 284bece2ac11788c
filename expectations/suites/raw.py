"""Landing data as loaded (``raw.*``): the declared schema and the required fields.

Raw tables keep every physical record as text (staging decides what is clean), so a raw
suite checks only what the loader guarantees: the columns a source declares are there, the
fields its YAML marks ``not_null`` (file, line number, batch) are filled, and value sets
declared there hold. An empty raw table is a warning: a source may not have delivered yet.
"""

from __future__ import annotations

from great_expectations.expectations.expectation import Expectation

from expectations.declared import DeclaredRelation
from expectations.suites import BuildContext, declared_tests, dedupe, row_count, schema


def raw_table(relation: DeclaredRelation, ctx: BuildContext) -> list[Expectation]:
    """Schema (declared columns present) and required fields of one landed table."""
    return dedupe(
        [
            *row_count(relation, must_have_rows=False),
            *schema(relation, exact=False),
            *declared_tests(relation),
        ]
    )
