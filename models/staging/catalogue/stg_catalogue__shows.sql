with

items as (

    select * from {{ source('catalogue', 'catalogue_items') }}
    where entity = 'shows'

),

latest as (

    -- an edited show is served again by a later extraction: the latest updated_at wins,
    -- and between copies of the same version the one extracted last
    select * from items
    qualify row_number() over (
        partition by item ->> '$.show_id'
        order by
            {{ parse_utc_timestamp("item ->> '$.updated_at'") }} desc nulls last,
            _extracted_at desc,
            _file desc,
            _item_no desc
    ) = 1

),

renamed as (

    select
        -- ids
        item ->> '$.show_id' as show_id,
        -- show
        item ->> '$.title' as show_title,
        item ->> '$.description' as show_description,
        item ->> '$.metadata.maturity_rating' as maturity_rating,
        lower(item ->> '$.metadata.language') as language,
        try_cast(item ->> '$.metadata.release_date' as date) as release_date,
        -- genres: the vendor lists the primary genre first
        list_transform(
            from_json(item -> '$.genres', '["varchar"]'), genre -> lower(trim(genre))
        ) as genres,
        lower(trim(item ->> '$.genres[0]')) as primary_genre,
        -- cast: unnested one row per member in stg_catalogue__show_cast
        from_json(
            item -> '$.cast', '[{"name": "varchar", "role": "varchar", "character": "varchar"}]'
        ) as cast_members,
        coalesce(json_array_length(item, '$.cast'), 0) as cast_size,
        -- timestamps
        {{ parse_utc_timestamp("item ->> '$.updated_at'") }} as updated_at,
        _extracted_at as extracted_at,
        -- lineage
        _file,
        _item_no,
        _extract_batch_id,
        _batch_id,
        _loaded_at

    from latest

)

select * from renamed
