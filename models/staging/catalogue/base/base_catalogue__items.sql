{#-
    The latest version of every catalogue item (show or episode) the vendor API served.
    An edited item is served again by a later extraction: the latest `updated_at` wins, and
    between copies of the same version the one extracted last. The one model that reads the
    landed API pages; the staging models pick their entity from it.
-#}

with

items as (

    select * from {{ source('catalogue', 'catalogue_items') }}

),

keyed as (

    select
        -- ids
        entity,
        case entity
            when 'shows' then item ->> '$.show_id'
            when 'episodes' then item ->> '$.episode_id'
        end as item_id,
        -- the item as the API served it (JSON)
        item,
        -- timestamps
        {{ parse_utc_timestamp("item ->> '$.updated_at'") }} as updated_at,
        _extracted_at,
        -- lineage
        _file,
        _item_no,
        _extract_batch_id,
        _batch_id,
        _loaded_at

    from items

),

latest as (

    select * from keyed
    qualify row_number() over (
        partition by entity, item_id
        order by updated_at desc nulls last, _extracted_at desc, _file desc, _item_no desc
    ) = 1

)

select * from latest
