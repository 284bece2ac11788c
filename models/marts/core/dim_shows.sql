with

shows as (

    select * from {{ ref('stg_catalogue__shows') }}

),

episodes as (

    select * from {{ ref('stg_catalogue__episodes') }}

),

episode_stats as (

    select
        show_id,
        count(*) as episodes,
        count(distinct season_number) as seasons,
        sum(duration_s) as total_duration_s
    from episodes
    group by show_id

),

final as (

    select
        -- ids
        shows.show_id::varchar as show_id,
        -- attributes
        shows.show_title::varchar as title,
        shows.primary_genre::varchar as primary_genre,
        shows.genres::varchar[] as genres,
        shows.maturity_rating::varchar as maturity_rating,
        shows.language::varchar as language,
        shows.cast_size::integer as cast_size,
        coalesce(episode_stats.episodes, 0)::bigint as episodes,
        coalesce(episode_stats.seasons, 0)::bigint as seasons,
        coalesce(episode_stats.total_duration_s, 0)::bigint as total_duration_s,
        (coalesce(episode_stats.episodes, 0) = 1)::boolean as is_movie,
        -- timestamps
        shows.release_date::date as release_date,
        shows.updated_at::timestamp as updated_at

    from shows
    left join episode_stats on shows.show_id = episode_stats.show_id

)

select * from final
