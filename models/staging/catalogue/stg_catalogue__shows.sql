with

shows as (

    select * from {{ ref('base_catalogue__items') }}
    where entity = 'shows'

),

renamed as (

    select
        -- ids
        item_id as show_id,
        -- show
        item ->> '$.title' as show_title,
        item ->> '$.description' as show_description,
        item ->> '$.metadata.maturity_rating' as maturity_rating,
        lower(item ->> '$.metadata.language') as language,
        try_cast(item ->> '$.metadata.release_date' as date) as release_date,
        -- genres: the vendor lists the primary genre first
        {{ catalogue_show_genres('item') }} as genres,
        lower(trim(item ->> '$.genres[0]')) as primary_genre,
        -- cast: unnested one row per member in stg_catalogue__show_cast
        {{ catalogue_show_cast('item') }} as cast_members,
        coalesce(json_array_length(item, '$.cast'), 0) as cast_size,
        -- timestamps
        updated_at,
        _extracted_at as extracted_at,
        -- lineage
        _file,
        _item_no,
        _extract_batch_id,
        _batch_id,
        _loaded_at

    from shows

)

select * from renamed
