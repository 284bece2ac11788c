{#-
    `select * from` a source table that Python writes (ml.churn_predictions, say), or, while
    it does not exist yet, an empty select of the columns its sources YAML declares: a first
    `dbt build` on a fresh warehouse (before any scoring) then succeeds. While dbt parses
    (execute false) it always reads the source, so the source is in the lineage.
-#}
{% macro source_or_empty(source_name, table_name) %}
    {%- set relation = source(source_name, table_name) -%}
    {%- set found = not execute or adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier=relation.identifier
    ) is not none -%}
    {%- if found -%}
        select * from {{ relation }}
    {%- else -%}
        {%- set node = graph.sources.values()
            | selectattr('source_name', 'equalto', source_name)
            | selectattr('name', 'equalto', table_name)
            | first -%}
        select
        {%- for column in node.columns %}
            null as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
        where false
    {%- endif -%}
{% endmacro %}

{#- The performance window of an as-of day: its ISO week, Monday to Sunday (two columns). -#}
{% macro performance_window(day) %}
    date_trunc('week', {{ day }})::date as window_start,
    (date_trunc('week', {{ day }}) + interval 6 day)::date as window_end
{%- endmacro %}
