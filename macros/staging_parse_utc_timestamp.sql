{#-
    An ISO-8601 text timestamp with an offset or `Z` (the catalogue API, the ticket export)
    as a naive timestamp in UTC, the convention of every `<event>_at` column; null when it
    does not parse.
-#}
{% macro parse_utc_timestamp(column) -%}
    timezone('UTC', try_cast({{ column }} as timestamptz))
{%- endmacro %}
