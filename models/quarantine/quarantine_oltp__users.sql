with

users as (

    -- the rows a cleaning rule rejected (see base_oltp__users for the rules)
    select * from {{ ref('base_oltp__users') }}
    where quarantine_reason is not null

),

quarantined as (

    select
        -- ids: a quarantined user still exists at the source, so payments, tickets and
        -- events that name them are not orphans; the normalised email is their match key
        user_id,
        email,
        -- why
        quarantine_reason,
        raw_record,
        -- lineage (the OLTP copy has no file or line)
        _batch_id,
        _loaded_at

    from users

)

select * from quarantined
