with

sessions as (

    select * from {{ ref('int_viewing_events_sessionized') }}

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
