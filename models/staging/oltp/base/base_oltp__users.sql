{#-
    Every OLTP user row, typed, with the first cleaning rule it fails (null when clean).
    stg_oltp__users keeps the clean rows and quarantine_oltp__users the rest, so every row
    lands in exactly one of them and the rules live here only. Rules are checked in a fixed
    order, so a row carries one reason. Every row is a user the source system knows: the
    other sources' orphan checks read this model, not staging.
-#}

with

users as (

    select * from {{ source('oltp', 'users') }}

),

classified as (

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
        -- verdict
        case
            when cast(birth_date as date) > cast(signup_at as date) then 'future_birth_date'
            when nullif(trim(country), '') is null then 'null_country'
        end as quarantine_reason,
        -- the whole source row, so nothing is lost when it is set aside
        cast(to_json(users) as varchar) as raw_record,
        -- lineage
        _batch_id,
        _loaded_at

    from users

)

select * from classified
