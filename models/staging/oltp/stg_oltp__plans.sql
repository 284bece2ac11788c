with

plans as (

    select * from {{ source('oltp', 'plans') }}

),

renamed as (

    select
        -- ids
        cast(plan_id as integer) as plan_id,
        -- plan
        lower(trim(name)) as plan_name,
        cast(max_streams as integer) as max_streams,
        -- lineage
        _batch_id,
        _loaded_at

    from plans

)

select * from renamed
