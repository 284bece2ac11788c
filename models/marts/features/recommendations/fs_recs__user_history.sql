{{
    config(
        materialized='incremental',
        unique_key=['as_of_date', 'feature_set_version'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ feature_batches_start(ref('stg_events__viewing_events'), 'event_date', var('events_lookback_days')) }}",
        post_hook=["{{ feature_batches_rest() }}", "{{ register_feature_set('recs_user_history') }}"],
    )
}}

{#-
    User viewing histories: one row per user per as-of day for every user who watched in
    the `window_days` days up to it: the shows they watched, most recently watched first
    (at most `max_history`), as a JSON list, and the latest one (a recommender's "just
    watched"). Read from the per-event log, which sees every show of a session. This is
    the recommender's only source of histories (batch scoring and serving, declared in
    ml/features/definitions.py); changing the window or the cap here gives a new version.
-#}

{% set version = feature_set_version() %}
{% set window_days = 90 %}
{% set max_history = 100 %}

with

as_of_days as (

    -- late events change recent days: rebuild this version's last days (see the macro)
    {{ feature_as_of_days(ref('stg_events__viewing_events'), 'event_date', var('events_lookback_days')) }}

),

events as (

    -- the days the windows of this query's as-of days cover
    select * from {{ ref('stg_events__viewing_events') }}
    where
        event_date > (select min(as_of_days.as_of_date) from as_of_days) - {{ window_days }}
        and event_date <= (select max(as_of_days.as_of_date) from as_of_days)

),

watched_daily as (

    -- one row per user, show and day watched
    select
        user_id,
        show_id,
        event_date,
        max(occurred_at) as last_watched_at
    from events
    group by user_id, show_id, event_date

),

watched_until as (

    -- a day's row speaks for the pair on every as-of day until the pair's next watched
    -- day, or until it leaves the window (or this query's last as-of day)
    select
        *,
        least(
            lead(event_date) over (partition by user_id, show_id order by event_date) - 1,
            event_date + {{ window_days - 1 }},
            (select max(as_of_days.as_of_date) from as_of_days)
        ) as speaks_until
    from watched_daily

),

in_window as (

    -- one row per user, show and as-of day of this query whose window holds the show
    select
        watched_until.user_id,
        watched_until.show_id,
        watched_until.last_watched_at,
        unnest(generate_series(
            greatest(watched_until.event_date, (select min(as_of_days.as_of_date) from as_of_days)),
            watched_until.speaks_until,
            interval 1 day
        ))::date as as_of_date
    from watched_until

),

histories as (

    select
        in_window.user_id,
        in_window.as_of_date,
        -- most recent first, ties by show id: an unordered list sorted afterwards (an
        -- ordered aggregate sorts inside every group and was five times slower)
        list_transform(
            list_sort(list({
                'newest_first': -epoch_us(in_window.last_watched_at), 'show_id': in_window.show_id
            }))[1:{{ max_history }}],
            watched -> watched.show_id
        ) as recent_shows
    from in_window
    inner join as_of_days on in_window.as_of_date = as_of_days.as_of_date
    group by in_window.user_id, in_window.as_of_date

),

landed as (

    -- when the last event of each user's window reached the landing area: a range window
    -- over the days they watched, read at each as-of day
    select
        user_id,
        day,
        is_as_of_day,
        max(landed_at) over (
            partition by user_id order by day
            range between interval {{ window_days - 1 }} days preceding and current row
        ) as known_at
    from (
        select
            user_id,
            event_date as day,
            max(_landed_at) as landed_at,
            false as is_as_of_day
        from events
        group by user_id, event_date
        union all
        select
            user_id,
            as_of_date as day,
            null as landed_at,
            true as is_as_of_day
        from histories
    ) as days_of_users

),

final as (

    select
        histories.user_id::bigint as user_id,
        histories.as_of_date::date as as_of_date,
        (histories.as_of_date + interval 1 day)::timestamp as feature_timestamp,
        greatest(histories.as_of_date + interval 1 day, landed.known_at)::timestamp as created_at,
        '{{ version }}'::varchar as feature_set_version,
        -- JSON text, as json.dumps writes it: the online store holds scalars best, and a
        -- string round-trips unchanged through every backend
        (
            '['
            || array_to_string(
                list_transform(histories.recent_shows, show_id -> to_json(show_id)::varchar), ', '
            )
            || ']'
        )::varchar as recent_shows,
        histories.recent_shows[1]::varchar as last_show_id

    from histories
    inner join landed
        on
            histories.user_id = landed.user_id
            and histories.as_of_date = landed.day
            and landed.is_as_of_day

)

select * from final
