{#- Use the folder's schema name as is (raw, staging, core ...) rather than dbt's default
    <target schema>_<custom schema>: the warehouse is one DuckDB file per environment. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
