with

users as (

    select * from {{ source('oltp', 'users') }}

),

classified as (

    select
        *,
        -- the whole source row, so nothing is lost when it is set aside
        cast(to_json(users) as varchar) as raw_record,
        {{ oltp_users_quarantine_reason() }} as quarantine_reason
    from users

),

quarantined as (

    select
        -- ids: a quarantined user still exists at the source, so payments, tickets and
        -- events that name them are not orphans; the normalised email is their match key
        cast(user_id as bigint) as user_id,
        {{ normalise_email('email') }} as email,
        -- why
        quarantine_reason,
        raw_record,
        -- lineage (the OLTP copy has no file or line)
        _batch_id,
        _loaded_at

    from classified
    where quarantine_reason is not null

)

select * from quarantined
