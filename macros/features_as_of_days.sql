{#-
    Feature builds in batches of as-of days.

    A feature mart describes every as-of day, and each day reads a window of the days before
    it (90 days of sessions, say). Built in one query, a full build holds every day's window
    at once: at `--scale large` (25,000 users, 180 days) the co-watch pairs and the history
    lists of every day did not fit in DuckDB's 8 GB. So a build computes its as-of days in
    batches of at most `var('feature_batch_days')` consecutive days, each a query of its
    own whose memory is that of its days:

    - `feature_batches_start(...)` (the model's pre-hook) plans the build: the days from
      `feature_rebuild_from(lookback_days)` (or the data's first day) to the data's last,
      sets the first batch's bounds as DuckDB variables on the model's connection, and
      records the build's days in `feature_builds` (the mart's data tests read those days
      only: macros/tests_rebuilt_days.sql);
    - the model's own query computes the days `feature_build_window(...)` gives: that batch
      (dbt's incremental materialization creates or merges it as usual);
    - `feature_batches_rest()` (the model's post-hook, before its other hooks) computes the
      remaining batches the same way, one query each, in the same transaction: a build that
      fails in any batch leaves the table as it was.

    Each day depends only on its own window, so the batches give the rows a single query
    would (tests/models/test_feature_batches.py builds both ways and compares them). An
    incremental build of one more day is one batch. Run outside dbt (no variables set), the
    model's query computes every day.
-#}

{#- the DuckDB variable holding one bound of the model's current batch -#}
{% macro _feature_batch_variable(bound) -%}
    {{- return('loopline_batch__' ~ model.name ~ '__' ~ bound) -}}
{%- endmacro %}

{#-
    The as-of days this query computes, as one row (`first_day`, `last_day`): the current
    batch when the build set one, else every day from `feature_rebuild_from(lookback_days)`
    (or the first day of `data`, a relation with a `date_column`) to the last day of `data`.
    Used as the body of a CTE.
-#}
{% macro feature_build_window(data, date_column, lookback_days) %}
    select
        coalesce(
            getvariable('{{ _feature_batch_variable("from") }}'),
            greatest(data_bounds.data_from, build_from.first_day)
        )::date as first_day,
        coalesce(getvariable('{{ _feature_batch_variable("to") }}'), data_bounds.data_through)::date as last_day,
        data_bounds.data_from,
        data_bounds.data_through
    from (
        select
            min({{ date_column }})::date as data_from,
            max({{ date_column }})::date as data_through
        from {{ data }}
    ) as data_bounds
    cross join ({{ feature_rebuild_from(lookback_days) }}) as build_from
{% endmacro %}

{#-
    The as-of days an incremental feature build computes, one row each (`as_of_date`):
    the days of `feature_build_window` (this batch; this version's latest day minus the
    lookback on, or every day on a full refresh or for a new version, up to the data's
    last day). With `week_ends_only`, only Sundays: the weekly feature sets describe each
    week at its end. Used as the body of an `as_of_days` CTE.
-#}
{% macro feature_as_of_days(data, date_column, lookback_days, week_ends_only=false) %}
    select as_of_date
    from (
        select
            unnest(generate_series(window_days.first_day, window_days.last_day, interval 1 day))::date
                as as_of_date
        from ({{ feature_build_window(data, date_column, lookback_days) }}) as window_days
    ) as all_days
    {% if week_ends_only %}
        where dayofweek(as_of_date) = 0
    {% endif %}
{% endmacro %}

{#- pre-hook: plan the build (same arguments as the model's `feature_build_window`) and set
    the first batch's bounds; `through` is the last day of the whole build -#}
{% macro feature_batches_start(data, date_column, lookback_days) %}
    {%- set days = var('feature_batch_days') | int -%}
    {%- if days < 1 -%}
        {{ exceptions.raise_compiler_error("var feature_batch_days must be a whole number of days >= 1, not " ~ var('feature_batch_days')) }}
    {%- endif -%}
    {%- set plan = _feature_batch_variable('plan') -%}
    {%- for bound in ('from', 'to', 'through') %}
    reset variable {{ _feature_batch_variable(bound) }};
    {%- endfor %}
    set variable {{ plan }} = (
        select struct_pack(first_day := first_day, through_day := last_day)
        from ({{ feature_build_window(data, date_column, lookback_days) }})
    );
    set variable {{ _feature_batch_variable('from') }} = getvariable('{{ plan }}').first_day;
    set variable {{ _feature_batch_variable('through') }} = getvariable('{{ plan }}').through_day;
    reset variable {{ plan }};
    set variable {{ _feature_batch_variable('to') }} = least(
        getvariable('{{ _feature_batch_variable("from") }}') + {{ days - 1 }},
        getvariable('{{ _feature_batch_variable("through") }}')
    );
    insert or replace into {{ this.schema }}.feature_builds
        (relation_name, feature_set_version, rebuilt_from, rebuilt_through, built_at, unsettled_from)
    select
        '{{ this.identifier }}',
        '{{ feature_set_version() }}',
        getvariable('{{ _feature_batch_variable("from") }}'),
        getvariable('{{ _feature_batch_variable("through") }}'),
        now()::timestamp,
        -- least() passes over a null: a settled record starts again from this build's days
        least(
            getvariable('{{ _feature_batch_variable("from") }}'),
            (
                select unsettled_from from {{ this.schema }}.feature_builds
                where relation_name = '{{ this.identifier }}'
            )
        )
{% endmacro %}

{#- post-hook: the batches after the first, each deleted (this version's rows of its days)
    and inserted by name (the table may hold columns of older versions); then the
    variables are cleared. Returns a no-op statement: the work runs as the hook renders. -#}
{% macro feature_batches_rest() %}
    {%- if execute -%}
        {%- set days = var('feature_batch_days') | int -%}
        {%- set bounds = run_query(
            "select getvariable('" ~ _feature_batch_variable('to') ~ "')::date, "
            ~ "getvariable('" ~ _feature_batch_variable('through') ~ "')::date"
        ).rows[0] -%}
        {%- set done, through = bounds[0], bounds[1] -%}
        {%- if done is not none and through is not none and done < through -%}
            {%- set left = (through - done).days -%}
            {%- set batches = (left + days - 1) // days -%}
            {%- for n in range(batches) -%}
                {%- set first = done + modules.datetime.timedelta(days=1 + n * days) -%}
                {%- set last = [first + modules.datetime.timedelta(days=days - 1), through] | min -%}
                {{ log(model.name ~ ": batch " ~ (n + 2) ~ " of " ~ (batches + 1) ~ " of as-of days, " ~ first ~ " to " ~ last, info=True) }}
                {%- do run_query(
                    "set variable " ~ _feature_batch_variable('from') ~ " = '" ~ first ~ "'::date; "
                    ~ "set variable " ~ _feature_batch_variable('to') ~ " = '" ~ last ~ "'::date; "
                    ~ "delete from " ~ this ~ " where feature_set_version = '" ~ feature_set_version()
                    ~ "' and as_of_date between '" ~ first ~ "'::date and '" ~ last ~ "'::date; "
                    ~ "insert into " ~ this ~ " by name select * from (\n" ~ model.compiled_code ~ "\n)"
                ) -%}
            {%- endfor -%}
        {%- endif -%}
        {%- for bound in ('from', 'to', 'through') -%}
            {%- do run_query("reset variable " ~ _feature_batch_variable(bound)) -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{% endmacro %}
