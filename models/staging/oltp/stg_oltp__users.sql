with

users as (

    select * from {{ source('oltp', 'users') }}

),

classified as (

    select
        *,
        {{ oltp_users_quarantine_reason() }} as quarantine_reason
    from users

),

clean as (

    -- the rest is in quarantine_oltp__users
    select * from classified
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        cast(user_id as bigint) as user_id,
        -- profile
        {{ normalise_email('email') }} as email,
        upper(trim(country)) as country,
        -- SQLite hands dates and timestamps over as text, Postgres typed: a cast covers both
        cast(birth_date as date) as birth_date,
        lower(trim(acquisition_channel)) as acquisition_channel,
        lower(trim(primary_device)) as primary_device,
        -- timestamps
        cast(signup_at as timestamp) as signup_at,
        cast(updated_at as timestamp) as updated_at,
        -- lineage
        _batch_id,
        _loaded_at

    from clean

)

select * from renamed
