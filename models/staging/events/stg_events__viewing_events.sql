{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with

lines as (

    select * from {{ source('events', 'events_lines') }}
    {% if is_incremental() %}
    -- raw lines are append-only and stamped when loaded, so only batches loaded since
    -- the last build need parsing; late events arrive in later files and are caught here
        where _loaded_at > (
            select coalesce(max(this_model._loaded_at), '1900-01-01'::timestamp)
            from {{ this }} as this_model
        )
    {% endif %}

),

parsed as (

    {{ events_parse_lines('lines') }}

),

known_users as (

    -- a quarantined user still exists in the source system: their events are not orphans
    select user_id from {{ ref('stg_oltp__users') }}
    union
    select user_id from {{ ref('quarantine_oltp__users') }}

),

known_shows as (

    select show_id from {{ ref('stg_catalogue__shows') }}

),

clean as (

    select *
    from parsed
    where {{ events_quarantine_reason('known_users', 'known_shows') }} is null

),

deduplicated as (

    select *
    from clean
    {% if is_incremental() %}
    -- a device that re-sends an event does so in a later file: keep the copy loaded first
        where event_id not in (select this_model.event_id from {{ this }} as this_model)
    {% endif %}
    qualify row_number() over (partition by event_id order by _loaded_at, _file, _line_no) = 1

),

renamed as (

    select
        -- ids
        event_id,
        session_id,
        user_id,
        show_id,
        episode_id,
        -- event
        event_type,
        position_ms,
        bitrate_kbps,
        quality,
        device,
        app_version,
        os,
        network,
        country,
        -- timestamps
        occurred_at,
        occurred_at::date as event_date,
        -- lineage
        _file,
        _line_no,
        _batch_id,
        _loaded_at,
        -- an hour's file holds what arrived in that hour: its lines were known by the end of it
        try_strptime(regexp_extract(_file, 'events_(\d{8}T\d{2})', 1), '%Y%m%dT%H')
        + interval 1 hour as _landed_at,
        -- which dbt run wrote the row: `loopline build` reports rows processed from it
        '{{ invocation_id }}' as _dbt_invocation_id

    from deduplicated

)

select * from renamed
