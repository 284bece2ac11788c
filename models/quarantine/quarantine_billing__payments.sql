with

payments as (

    -- the rows a cleaning rule rejected (see base_billing__payments for the rules)
    select * from {{ ref('base_billing__payments') }}
    where quarantine_reason is not null

),

quarantined as (

    select
        -- ids
        payment_id,
        -- why
        quarantine_reason,
        raw_record,
        -- lineage
        _file,
        _line_no,
        _batch_id,
        _loaded_at

    from payments

)

select * from quarantined
