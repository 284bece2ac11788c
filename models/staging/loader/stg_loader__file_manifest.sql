with

source as (

    select * from {{ source('loader', 'file_manifest') }}

),

renamed as (

    select
        -- ids
        file_path,
        source as source_name,
        batch_id as _batch_id,
        -- what the loader found
        status = 'rejected' as is_rejected,
        reason as rejected_reason,
        records as landed_records,
        size_bytes,
        sha256,
        -- timestamps
        loaded_at

    from source

)

select * from renamed
