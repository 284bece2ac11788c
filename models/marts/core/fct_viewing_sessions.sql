{{
    config(
        materialized='incremental',
        unique_key='session_date',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

{#-
    Incremental by day, as int_viewing_events_sessionized is: a build rewrites the days that
    model rewrites (its last `events_lookback_days` days, from this table's last day), and
    every day holding a session whose first show's genre the catalogue has changed since (the
    genre is the one column taken from elsewhere), so the table equals a full rebuild.
-#}

with

sessions as (

    select * from {{ ref('int_viewing_events_sessionized') }}
    {% if is_incremental() %}
        where
            session_date >= {{ lookback_first_day('session_date') }}
            or session_date in (
                select distinct this_model.session_date
                from {{ this }} as this_model
                left join {{ ref('stg_catalogue__shows') }} as shows
                    on this_model.first_show_id = shows.show_id
                where this_model.first_show_genre is distinct from shows.primary_genre::varchar
            )
    {% endif %}

),

shows as (

    select * from {{ ref('stg_catalogue__shows') }}

),

final as (

    select
        -- ids
        sessions.viewing_session_id::varchar as viewing_session_id,
        sessions.user_id::bigint as user_id,
        sessions.first_show_id::varchar as first_show_id,
        sessions.last_show_id::varchar as last_show_id,
        sessions.last_episode_id::varchar as last_episode_id,
        -- session
        sessions.device::varchar as device,
        shows.primary_genre::varchar as first_show_genre,
        sessions.shows_watched::bigint as shows_watched,
        sessions.episodes_watched::bigint as episodes_watched,
        sessions.events::bigint as events,
        sessions.pauses::bigint as pauses,
        sessions.watched_seconds::bigint as watched_seconds,
        sessions.max_bitrate_kbps::integer as max_bitrate_kbps,
        sessions.has_stop::boolean as has_stop,
        -- timestamps
        sessions.started_at::timestamp as started_at,
        sessions.ended_at::timestamp as ended_at,
        sessions.session_date::date as session_date,
        sessions._landed_at::timestamp as landed_at

    from sessions
    left join shows on sessions.first_show_id = shows.show_id

)

select * from final
