{#-
    True when a table Python writes (schema.identifier, e.g. ml.churn_predictions) exists in the
    warehouse. Models over such tables read an empty set until it does, so a first `dbt build`
    on a fresh warehouse (before any scoring) succeeds. While dbt parses (execute false) it
    answers true, so the source still appears in the lineage.
-#}
{% macro relation_exists(schema, identifier) %}
    {%- if not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set relation = adapter.get_relation(
        database=target.database, schema=schema, identifier=identifier
    ) -%}
    {{ return(relation is not none) }}
{% endmacro %}
