with

shows as (

    select
        item_id as show_id,
        {{ catalogue_show_genres('item') }} as genres,
        updated_at
    from {{ ref('base_catalogue__items') }}
    where entity = 'shows'

),

renamed as (

    -- unnest and generate_subscripts walk the list in step: genre n gets rank n
    select
        -- ids
        show_id,
        -- genre
        unnest(genres) as genre,
        generate_subscripts(genres, 1) as genre_rank,
        generate_subscripts(genres, 1) = 1 as is_primary_genre,
        -- timestamps
        updated_at

    from shows

)

select * from renamed
