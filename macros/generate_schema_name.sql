{#- Use the folder's schema name as is (raw, staging, core ...) rather than dbt's default
    <target schema>_<custom schema>: the warehouse is one DuckDB file per environment.

    Write-audit-publish (docs/validation.md): with `--vars '{wap_colour: green}'` a build
    writes every model into `<schema>__green`; `loopline.publish` points the plain schemas'
    views at that colour once its critical suites pass. Landing (`raw`), seeds (`reference`)
    and snapshots (history that must see every run) are never coloured. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set base = target.schema if custom_schema_name is none else custom_schema_name | trim -%}
    {%- set colour = var('wap_colour', none) -%}
    {%- if colour and base not in uncoloured_schemas() -%}{{ base }}__{{ colour }}{%- else -%}{{ base }}{%- endif -%}
{%- endmacro %}

{#- The schemas a write-audit-publish build writes in place (loopline/publish.py reads the
    same list from `UNCOLOURED`). -#}
{% macro uncoloured_schemas() -%}
    {{- return(['raw', 'reference', 'snapshots']) -}}
{%- endmacro %}
