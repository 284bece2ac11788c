with

tickets as (

    -- the lines a cleaning rule rejected (see base_support__tickets for the rules)
    select * from {{ ref('base_support__tickets') }}
    where quarantine_reason is not null

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

    from tickets

)

select * from quarantined
