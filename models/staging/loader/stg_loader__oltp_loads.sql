with

source as (

    select * from {{ source('loader', 'oltp_loads') }}

),

renamed as (

    select
        table_name,
        row_count as landed_records,
        checksum,
        batch_id as _batch_id,
        loaded_at

    from source

)

select * from renamed
