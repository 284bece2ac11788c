{#-
    Data tests of an incremental feature mart read the as-of days written since it was last
    published.

    A feature mart's build rewrites a few days (an incremental build) or all of them (a
    full refresh, or a new feature-set version); the days before were tested by the builds
    that wrote them, and publication (loopline/publish.py) vouches for them. So the tests
    under models/marts/features/ carry `where: "as_of_date >= __rebuilt_from__"`
    (dbt_project.yml), and this macro (dbt's `get_where_subquery`, which wraps the `model` of
    every generic test) replaces `__rebuilt_from__` with the first day written since the
    tested relation was last published, as `feature_batches_start` records it in
    `feature_builds` beside the mart (`unsettled_from`): a build whose tests failed is not
    published, so the next build's tests read its days again. A relation with no such day
    on record (a plain table, a build outside dbt, a published relation tested on its own)
    is tested in full; so is every build of a warehouse nobody publishes (plain `dbt build`).
    Every key these tests check includes as_of_date, so the rows of the days not read
    cannot break them.
-#}
{% macro duckdb__get_where_subquery(relation) -%}
    {%- set where = config.get('where') or '' -%}
    {%- if '__rebuilt_from__' not in where -%}
        {%- do return(dbt.default__get_where_subquery(relation)) -%}
    {%- endif -%}
    {%- set builds = api.Relation.create(
        database=relation.database, schema=relation.schema, identifier='feature_builds'
    ) -%}
    {%- set rebuilt_from -%}
        coalesce(
            (select max(unsettled_from) from {{ builds }} where relation_name = '{{ relation.identifier }}'),
            '1900-01-01'::date
        )
    {%- endset -%}
    {%- do return('(select * from ' ~ relation ~ ' where ' ~ where | replace('__rebuilt_from__', rebuilt_from) ~ ') dbt_subquery') -%}
{%- endmacro %}
