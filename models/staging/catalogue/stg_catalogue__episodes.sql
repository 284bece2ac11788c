with

episodes as (

    select * from {{ ref('base_catalogue__items') }}
    where entity = 'episodes'

),

renamed as (

    select
        -- ids
        item_id as episode_id,
        item ->> '$.show_id' as show_id,
        -- episode
        try_cast(item ->> '$.season' as integer) as season_number,
        try_cast(item ->> '$.episode_number' as integer) as episode_number,
        item ->> '$.title' as episode_title,
        try_cast(item ->> '$.duration_s' as integer) as duration_s,
        -- timestamps
        {{ parse_utc_timestamp("item ->> '$.released_at'") }} as released_at,
        updated_at,
        _extracted_at as extracted_at,
        -- lineage
        _file,
        _item_no,
        _extract_batch_id,
        _batch_id,
        _loaded_at

    from episodes

)

select * from renamed
