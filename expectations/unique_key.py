"""A uniqueness expectation that costs one GROUP BY in the warehouse.

GX's own ``ExpectCompoundColumnsToBeUnique`` (and ``ExpectColumnValuesToBeUnique``) on SQL
count duplicates with a window over the table joined back to it, then fetch the duplicated
rows in a second pass: on a 5-million-row feature table that took 9.7 s against 2.8 s for
one ``group by ... having count(*) > 1``. :class:`ExpectCompoundKeyToBeUnique` asks the
warehouse that one question (``loopline.duplicate_keys``) and reports the number of
duplicated keys as the observed value and the rows that share them as the unexpected count.
It works on pandas batches too, so a suite can also run on a data frame.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import (
    PandasExecutionEngine,
    SqlAlchemyExecutionEngine,
)
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer

METRIC = "loopline.duplicate_keys"


class DuplicateKeys(TableMetricProvider):
    """{"keys": keys that occur more than once, "rows": rows carrying them}."""

    metric_name = METRIC
    value_keys = ("column_list",)

    @metric_value(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(
        cls,  # noqa: N805 (GX metric functions are classmethods)
        execution_engine: SqlAlchemyExecutionEngine,
        metric_domain_kwargs: dict,
        metric_value_kwargs: dict,
        metrics: dict[str, Any],
        runtime_configuration: dict,
    ) -> dict[str, int]:
        selectable, _, _ = execution_engine.get_compute_domain(
            metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        source: Any = selectable.subquery() if hasattr(selectable, "subquery") else selectable
        keys: list[Any] = [sa.column(name) for name in metric_value_kwargs["column_list"]]
        groups = (
            sa.select(sa.func.count().label("n"))
            .select_from(source)
            .group_by(*keys)
            .having(sa.func.count() > 1)
            .subquery("duplicated")
        )
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(groups.c.n), 0))
        row = execution_engine.execute_query(query).fetchone()
        return {"keys": int(row[0]), "rows": int(row[1])} if row else {"keys": 0, "rows": 0}

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,  # noqa: N805 (GX metric functions are classmethods)
        execution_engine: PandasExecutionEngine,
        metric_domain_kwargs: dict,
        metric_value_kwargs: dict,
        metrics: dict[str, Any],
        runtime_configuration: dict,
    ) -> dict[str, int]:
        frame, _, _ = execution_engine.get_compute_domain(
            metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        columns = list(metric_value_kwargs["column_list"])
        counts = frame.groupby(columns, dropna=False, sort=False).size()
        duplicated = counts[counts > 1]
        return {"keys": len(duplicated), "rows": int(duplicated.sum())}


class ExpectCompoundKeyToBeUnique(BatchExpectation):
    """Expect no two rows to share the values of `column_list` (nulls compare equal)."""

    column_list: list[str]

    metric_dependencies: ClassVar[tuple[str, ...]] = (METRIC, "table.row_count")
    domain_keys: ClassVar[tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")
    success_keys: ClassVar[tuple[str, ...]] = ("column_list",)
    args_keys: ClassVar[tuple[str, ...]] = ("column_list",)

    def _validate(
        self,
        metrics: dict,
        runtime_configuration: dict | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        duplicates = metrics[METRIC]
        rows = int(metrics["table.row_count"])
        return {
            "success": duplicates["rows"] == 0,
            "result": {
                "observed_value": duplicates["keys"],
                "element_count": rows,
                "unexpected_count": duplicates["rows"],
                "unexpected_percent": 100.0 * duplicates["rows"] / rows if rows else 0.0,
            },
        }

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict | None = None,
        **kwargs: Any,
    ) -> list[RenderedStringTemplateContent]:
        columns = list((configuration.kwargs if configuration else {}).get("column_list") or [])
        params = {f"column_{i}": name for i, name in enumerate(columns)}
        template = "No two rows may share the key " + ", ".join(f"${p}" for p in params) + "."
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": template,
                    "params": params,
                    "styling": (runtime_configuration or {}).get("styling"),
                },
            )
        ]
