{{
    config(
        materialized='incremental',
        unique_key='session_date',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

{#-
    Viewing sessions: a person's consecutive events on one device with no gap longer
    than 30 minutes, across episodes (a binge is one session). Incremental by day:
    `unique_key='session_date'` makes dbt delete and rebuild whole days, so a late event
    re-forms its day's sessions instead of adding a half session beside them.
-#}

{% set gap_minutes = 30 %}

with

events as (

    select * from {{ ref('stg_events__viewing_events') }}
    {% if is_incremental() %}
    -- events arrive up to 4 days late, so every build rebuilds the last
    -- `events_lookback_days` days; 12 hours more are read so a session that started
    -- before midnight is seen whole (it is kept only when its day is rebuilt)
    -- (an empty target, e.g. created by `dbt run --empty`, reads everything)
        where occurred_at >= {{ lookback_first_day('session_date') }} - to_hours(12)
    {% endif %}

),

ordered as (

    select
        *,
        lag(occurred_at) over (
            partition by user_id, device order by occurred_at, event_id
        ) as previous_occurred_at,
        -- playback progress between two events of the same player session
        position_ms - lag(position_ms) over (
            partition by session_id order by occurred_at, event_id
        ) as position_delta_ms
    from events

),

numbered as (

    select
        *,
        sum(
            case
                when
                    previous_occurred_at is null
                    or occurred_at - previous_occurred_at > to_minutes({{ gap_minutes }})
                    then 1
                else 0
            end
        ) over (
            partition by user_id, device order by occurred_at, event_id
            rows between unbounded preceding and current row
        ) as session_number
    from ordered

),

sessions as (

    select
        -- ids
        md5(concat_ws('|', user_id, device, min(occurred_at))) as viewing_session_id,
        user_id,
        device,
        -- timestamps
        min(occurred_at) as started_at,
        max(occurred_at) as ended_at,
        min(occurred_at)::date as session_date,
        -- what was watched
        arg_min(show_id, occurred_at) as first_show_id,
        arg_max(show_id, occurred_at) as last_show_id,
        arg_max(episode_id, occurred_at) as last_episode_id,
        count(distinct show_id) as shows_watched,
        count(distinct episode_id) as episodes_watched,
        count(distinct session_id) as player_sessions,
        count(*) as events,
        count(*) filter (where event_type = 'pause') as pauses,
        -- a jump backwards (seek) is not watching
        coalesce(sum(greatest(position_delta_ms, 0)), 0) / 1000 as watched_seconds,
        max(bitrate_kbps) as max_bitrate_kbps,
        bool_or(event_type = 'stop') as has_stop,
        max(_loaded_at) as _loaded_at,
        max(_landed_at) as _landed_at,
        '{{ invocation_id }}' as _dbt_invocation_id
    from numbered
    group by user_id, device, session_number

)

select *
from sessions
{% if is_incremental() %}
    where session_date >= {{ lookback_first_day('session_date') }}
{% endif %}
