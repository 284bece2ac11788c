{#-
    An email address as the key people are matched on across sources: the billing vendor
    upper-cases some addresses and pads others with spaces, the OLTP database does not.
-#}
{% macro normalise_email(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}
