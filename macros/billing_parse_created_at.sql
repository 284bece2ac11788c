{#-
    The vendor's `created` text as a UTC timestamp. The vendor changed its export format
    twice; all three formats are UTC and cannot be mistaken for one another (dots, an ISO
    `T`, slashes with AM/PM). Null when none of them parses: the row is quarantined.
-#}
{% macro billing_parse_created_at(column) -%}
    try_strptime(
        trim({{ column }}),
        ['%d.%m.%Y %H:%M:%S', '%Y-%m-%dT%H:%M:%SZ', '%m/%d/%Y %I:%M:%S %p']
    )
{%- endmacro %}
