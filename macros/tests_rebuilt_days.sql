{#-
    Data tests of an incremental feature mart read the as-of days its last build wrote.

    A feature mart's build rewrites a few days (an incremental build) or all of them (a
    full refresh, or a new feature-set version); the days before were tested by the builds
    that wrote them. So the tests under models/marts/features/ carry
    `where: "as_of_date >= __rebuilt_from__"` (dbt_project.yml), and this macro (dbt's
    `get_where_subquery`, which wraps the `model` of every generic test) replaces
    `__rebuilt_from__` with the first day of the tested relation's last build, as
    `feature_batches_start` records it in `feature_builds` beside the mart. A relation with
    no record there (a plain table, a build outside dbt) is tested in full. Every key these
    tests check includes as_of_date, so the rows of the days not read cannot break them.
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
            (select max(rebuilt_from) from {{ builds }} where relation_name = '{{ relation.identifier }}'),
            '1900-01-01'::date
        )
    {%- endset -%}
    {%- do return('(select * from ' ~ relation ~ ' where ' ~ where | replace('__rebuilt_from__', rebuilt_from) ~ ') dbt_subquery') -%}
{%- endmacro %}
