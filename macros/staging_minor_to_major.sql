{#-
    Money in minor units (cents, pence; yen have none) to major units, using the exponent
    from the `currencies` seed. Two decimals hold every exponent we have (0 or 2) exactly.
-#}
{% macro minor_to_major(amount_minor, minor_exponent) -%}
    ({{ amount_minor }} / power(10, {{ minor_exponent }}))::decimal(18, 2)
{%- endmacro %}

{#-
    Minor units to US dollars. Four decimals rather than cents, so that sums over many
    converted amounts do not drift by rounding each one.
-#}
{% macro minor_to_usd(amount_minor, minor_exponent, usd_per_unit) -%}
    ({{ amount_minor }} / power(10, {{ minor_exponent }}) * {{ usd_per_unit }})::decimal(18, 4)
{%- endmacro %}
