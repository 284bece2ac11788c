{{
    config(
        materialized='incremental',
        unique_key=['as_of_date', 'feature_set_version'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ feature_batches_start(ref('fct_viewing_sessions'), 'session_date', var('events_lookback_days')) }}",
        post_hook=["{{ feature_batches_rest() }}", "{{ register_feature_set('recs_co_watch') }}"],
    )
}}

{#- Co-watching: one row per ordered pair of shows watched by the same users in the 90
    days up to each as-of week end (Sundays); pairs with at least two such users. -#}

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

watched as (

    select
        week_ends.as_of_date,
        sessions.user_id,
        sessions.first_show_id as show_id,
        max(sessions.landed_at) as known_at
    from week_ends
    inner join sessions
        on
            sessions.session_date > week_ends.as_of_date - 90
            and week_ends.as_of_date >= sessions.session_date
    group by week_ends.as_of_date, sessions.user_id, sessions.first_show_id

),

show_viewers as (

    select
        as_of_date,
        show_id,
        count(*) as viewers
    from watched
    group by as_of_date, show_id

),

pairs as (

    select
        watched.as_of_date,
        watched.show_id,
        other.show_id as other_show_id,
        count(*) as co_viewers,
        max(greatest(watched.known_at, other.known_at)) as inputs_known_at
    from watched
    inner join watched as other
        on
            watched.as_of_date = other.as_of_date
            and watched.user_id = other.user_id
            and watched.show_id <> other.show_id
    group by watched.as_of_date, watched.show_id, other.show_id
    having count(*) >= 2

),

final as (

    select
        pairs.show_id::varchar as show_id,
        pairs.other_show_id::varchar as other_show_id,
        pairs.as_of_date::date as as_of_date,
        (pairs.as_of_date + interval 1 day)::timestamp as feature_timestamp,
        greatest(pairs.as_of_date + interval 1 day, pairs.inputs_known_at)::timestamp as created_at,
        '{{ version }}'::varchar as feature_set_version,
        pairs.co_viewers::bigint as co_viewers,
        -- P(watched other | watched this): the item-item signal a recommender ranks by
        (pairs.co_viewers / show_viewers.viewers)::double as co_watch_rate
    from pairs
    inner join show_viewers
        on
            pairs.as_of_date = show_viewers.as_of_date
            and pairs.show_id = show_viewers.show_id

)

select * from final
