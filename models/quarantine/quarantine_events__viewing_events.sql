with

events as (

    -- the lines a cleaning rule rejected (see base_events__viewing_events for the rules)
    select * from {{ ref('base_events__viewing_events') }}
    where quarantine_reason is not null

),

quarantined as (

    select
        -- ids
        event_id,
        user_id,
        show_id,
        occurred_at_raw,
        -- why
        quarantine_reason,
        raw_record,
        -- lineage
        _file,
        _line_no,
        _batch_id,
        _loaded_at,
        _dbt_invocation_id

    from events

)

select * from quarantined
