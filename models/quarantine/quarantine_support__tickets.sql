with

tickets_lines as (

    select * from {{ source('support', 'tickets_lines') }}

),

known_users as (

    -- a quarantined user still exists at the source: their tickets are not orphans
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

    {{ support_classify_tickets('tickets_lines', 'known_users') }}

),

quarantined as (

    select
        -- ids (null when the line is not JSON)
        ticket_id,
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
