{{
    config(
        materialized='incremental',
        unique_key=['as_of_date', 'feature_set_version'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ feature_batches_start(ref('fct_viewing_sessions'), 'session_date', var('events_lookback_days')) }}",
        post_hook=["{{ feature_batches_rest() }}", "{{ register_feature_set('recs_show_popularity') }}"],
    )
}}

{#- Show popularity and freshness: one row per released show per as-of day. -#}

{% set version = feature_set_version() %}

with

sessions as (

    select * from {{ ref('fct_viewing_sessions') }}

),

shows as (

    select * from {{ ref('dim_shows') }}

),

days as (

    -- late data changes recent days: rebuild this version's last days (see the macro)
    {{ feature_as_of_days(ref('fct_viewing_sessions'), 'session_date', var('events_lookback_days')) }}

),

show_days as (

    select
        shows.show_id,
        shows.release_date,
        days.as_of_date
    from shows
    cross join days
    where shows.release_date <= days.as_of_date

),

counted as (

    select
        show_days.show_id,
        show_days.as_of_date,
        show_days.release_date,
        count(distinct sessions.user_id) filter (
            where sessions.session_date > show_days.as_of_date - 7
        ) as viewers_7d,
        count(distinct sessions.user_id) as viewers_30d,
        count(sessions.viewing_session_id) filter (
            where sessions.session_date > show_days.as_of_date - 7
        ) as sessions_7d,
        max(sessions.landed_at) as inputs_known_at
    from show_days
    left join sessions
        on
            show_days.show_id = sessions.first_show_id
            and sessions.session_date > show_days.as_of_date - 30
            and show_days.as_of_date >= sessions.session_date
    group by show_days.show_id, show_days.as_of_date, show_days.release_date

),

final as (

    select
        show_id::varchar as show_id,
        as_of_date::date as as_of_date,
        (as_of_date + interval 1 day)::timestamp as feature_timestamp,
        greatest(as_of_date + interval 1 day, inputs_known_at)::timestamp as created_at,
        '{{ version }}'::varchar as feature_set_version,
        viewers_7d::bigint as viewers_7d,
        viewers_30d::bigint as viewers_30d,
        sessions_7d::bigint as sessions_7d,
        (as_of_date - release_date)::integer as days_since_release,
        rank() over (partition by as_of_date order by viewers_7d desc)::bigint as popularity_rank_7d
    from counted

)

select * from final
