{#-
    The first day an incremental build by day rewrites, as a scalar subquery: this model's
    last day less `events_lookback_days` (events arrive up to that late), or 1900-01-01 when
    the target is empty (e.g. created by `dbt run --empty`), so such a build reads
    everything. Used only inside `is_incremental()`, where `this` exists.
-#}
{% macro lookback_first_day(day_column) -%}
    (
        select
            coalesce(
                max(this_model.{{ day_column }}) - to_days({{ var('events_lookback_days') }}),
                '1900-01-01'::date
            )
        from {{ this }} as this_model
    )
{%- endmacro %}
