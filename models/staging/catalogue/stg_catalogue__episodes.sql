with

items as (

    select * from {{ source('catalogue', 'catalogue_items') }}
    where entity = 'episodes'

),

latest as (

    -- an edited episode is served again by a later extraction: the latest updated_at
    -- wins, and between copies of the same version the one extracted last
    select * from items
    qualify row_number() over (
        partition by item ->> '$.episode_id'
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
        item ->> '$.episode_id' as episode_id,
        item ->> '$.show_id' as show_id,
        -- episode
        try_cast(item ->> '$.season' as integer) as season_number,
        try_cast(item ->> '$.episode_number' as integer) as episode_number,
        item ->> '$.title' as episode_title,
        try_cast(item ->> '$.duration_s' as integer) as duration_s,
        -- timestamps
        {{ parse_utc_timestamp("item ->> '$.released_at'") }} as released_at,
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
