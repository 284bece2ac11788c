{{
    config(
        materialized='incremental',
        unique_key=['as_of_date', 'feature_set_version'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ feature_batches_start(ref('fct_viewing_sessions'), 'session_date', var('events_lookback_days')) }}",
        post_hook=["{{ feature_batches_rest() }}", "{{ register_feature_set('recs_user_genre_affinity') }}"],
    )
}}

{#- User-genre affinity: one row per user and genre watched in the 90 days up to each
    as-of week end (Sundays): the genre's share of the user's watch time. -#}

{% set version = feature_set_version() %}
{% set lookback = var('events_lookback_days') %}

with

sessions as (

    select * from {{ ref('fct_viewing_sessions') }}

),

week_ends as (

    -- late sessions (at most the lookback late) change only the week ends on or after the
    -- days they describe: rebuild from this version's last week end minus the lookback,
    -- which is that week end alone until the next one is due
    {{ feature_as_of_days(ref('fct_viewing_sessions'), 'session_date', lookback, week_ends_only=true) }}

),

user_genre as (

    select
        sessions.user_id,
        sessions.first_show_genre as genre,
        week_ends.as_of_date,
        sum(sessions.watched_seconds) as watched_seconds_90d,
        count(*) as sessions_90d,
        max(sessions.landed_at) as inputs_known_at
    from week_ends
    inner join sessions
        on
            sessions.session_date > week_ends.as_of_date - 90
            and week_ends.as_of_date >= sessions.session_date
    where sessions.first_show_genre is not null
    group by sessions.user_id, sessions.first_show_genre, week_ends.as_of_date

),

final as (

    select
        user_id::bigint as user_id,
        genre::varchar as genre,
        as_of_date::date as as_of_date,
        (as_of_date + interval 1 day)::timestamp as feature_timestamp,
        greatest(as_of_date + interval 1 day, inputs_known_at)::timestamp as created_at,
        '{{ version }}'::varchar as feature_set_version,
        (watched_seconds_90d / 60.0)::double as watch_minutes_90d,
        sessions_90d::bigint as sessions_90d,
        -- whole seconds summed, then divided: the share does not depend on the order the
        -- window adds the genres up in, so a rebuild gives the same bits
        (
            watched_seconds_90d
            / nullif(sum(watched_seconds_90d) over (partition by user_id, as_of_date), 0)
        )::double as share_of_watch_90d
    from user_genre

)

select * from final
