{#-
    The as-of days an incremental feature build computes, one row each (`as_of_date`):
    every day from the first day of `data` (a relation with a `date_column`) to its last,
    from `feature_rebuild_from(lookback_days)` on (this version's latest day minus the
    lookback; every day on a full refresh or for a new version). With `week_ends_only`,
    only Sundays: the weekly feature sets describe each week at its end.
    Used as the body of an `as_of_days` CTE.
-#}
{% macro feature_as_of_days(data, date_column, lookback_days, week_ends_only=false) %}
    select as_of_date
    from (
        select
            unnest(generate_series(
                greatest(bounds.data_from, build_from.first_day), bounds.data_through, interval 1 day
            ))::date as as_of_date
        from (
            select
                min({{ date_column }}) as data_from,
                max({{ date_column }}) as data_through
            from {{ data }}
        ) as bounds
        cross join ({{ feature_rebuild_from(lookback_days) }}) as build_from
    ) as all_days
    {% if week_ends_only %}
        where dayofweek(as_of_date) = 0
    {% endif %}
{% endmacro %}
