with

payments_rows as (

    select * from {{ source('billing', 'payments_rows') }}

),

known_users as (

    -- a quarantined user still exists at the source: their payments are not orphans
    select
        user_id,
        email
    from {{ ref('stg_oltp__users') }}
    union
    select
        user_id,
        email
    from {{ ref('quarantine_oltp__users') }}

),

classified as (

    {{ billing_classify_payments('payments_rows', 'known_users') }}

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

    from classified
    where quarantine_reason is not null

)

select * from quarantined
