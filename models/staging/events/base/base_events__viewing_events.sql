{{
    config(
        materialized='incremental',
        unique_key=['_file', '_line_no'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ record_unsettled_loads() }}",
    )
}}

{#-
    Every raw viewing-event line, parsed, with the first cleaning rule it fails (null when
    clean). stg_events__viewing_events keeps the clean rows and
    quarantine_events__viewing_events the rest: both are views of this table, so every line
    lands in exactly one of them and each line is parsed once.

    Two app generations coexist: app 5 renamed `position_ms` to `playhead_ms` and stamps
    local time with an offset, app 4 stamps UTC with `Z`; `quality` was added mid-range.
    Rules, in order: oversized_record (a line over LOOPLINE_MAX_RECORD_BYTES, loaded as a
    stub: its position and size, not its payload), malformed_json, null_event_id, null_user_id, unparseable_timestamp,
    negative_position, orphan_user (no such user at the source, clean or quarantined),
    orphan_show, duplicate (a clean copy of an event already kept: a device that re-sends
    an event does so in a later file, so the copy loaded first is the event).
-#}

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

known_users as (

    select user_id from {{ ref('base_oltp__users') }}
    where user_id is not null

),

known_shows as (

    select item_id as show_id from {{ ref('base_catalogue__items') }}
    where entity = 'shows' and item_id is not null

),

documents as (

    -- one parse per line: a list of JSON paths is extracted in a single pass over the
    -- document (`doc ->> path` once per field would parse every line fifteen times)
    select
        *,
        coalesce(json_valid(line), false) as is_valid_json,
        case when json_valid(line) then json_extract_string(line, [
            '$.event_id', '$.session_id', '$.user_id', '$.show_id', '$.episode_id',
            '$.event_type', '$.position_ms', '$.playhead_ms', '$.bitrate_kbps', '$.quality',
            '$.device', '$.context.app_version', '$.context.os', '$.context.network',
            '$.context.country', '$.occurred_at'
        ]) end as fields
    from lines

),

parsed as (

    select
        -- ids
        fields[1] as event_id,
        fields[2] as session_id,
        try_cast(fields[3] as bigint) as user_id,
        fields[4] as show_id,
        fields[5] as episode_id,
        -- what happened
        fields[6] as event_type,
        coalesce(
            try_cast(fields[7] as bigint),
            try_cast(fields[8] as bigint)
        ) as position_ms,
        try_cast(fields[9] as integer) as bitrate_kbps,
        fields[10] as quality,
        -- device context
        fields[11] as device,
        fields[12] as app_version,
        fields[13] as os,
        fields[14] as network,
        fields[15] as country,
        -- timestamps: every offset normalised to UTC
        fields[16] as occurred_at_raw,
        {{ parse_utc_timestamp("fields[16]") }} as occurred_at,
        -- lineage: a stub (a record the loader did not load) keeps only why and its size
        is_valid_json,
        _stub_reason,
        coalesce(
            {{ stub_record('_stub_reason', '_record_bytes') }}, line
        ) as raw_record,
        _file,
        _line_no,
        _batch_id,
        _loaded_at

    from documents

),

-- read twice (the clean copies ranked below, every line classified after): parsed once
ruled as materialized (

    select
        *,
        case
            when _stub_reason is not null then _stub_reason
            when not is_valid_json then 'malformed_json'
            when event_id is null then 'null_event_id'
            when user_id is null then 'null_user_id'
            when occurred_at is null then 'unparseable_timestamp'
            when position_ms < 0 then 'negative_position'
            when user_id not in (select known_users.user_id from known_users) then 'orphan_user'
            when show_id not in (select known_shows.show_id from known_shows) then 'orphan_show'
        end as rule_reason
    from parsed

),

-- the clean lines after the first copy of their event (in load order): ranked on the
-- keys alone, not on whole parsed lines
later_copies as (

    select
        _file,
        _line_no
    from ruled
    where rule_reason is null
    qualify row_number() over (
        partition by event_id
        order by _loaded_at, _file, _line_no
    ) > 1

),

classified as (

    select
        *,
        case
            when rule_reason is not null then rule_reason
            {% if is_incremental() %}
            -- a later copy of an event an earlier build kept
                when event_id in (
                    select this_model.event_id from {{ this }} as this_model
                    where this_model.quarantine_reason is null
                ) then 'duplicate'
            {% endif %}
            -- a later copy of an event within this build's lines: the first loaded is kept
            when (_file, _line_no) in (
                select
                    later_copies._file,
                    later_copies._line_no
                from later_copies
            ) then 'duplicate'
        end as quarantine_reason
    from ruled

),

final as (

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
        occurred_at_raw,
        -- verdict: the line as it arrived is kept for the rejected ones (clean lines are
        -- in raw.events_lines and fully parsed here)
        quarantine_reason,
        case when quarantine_reason is not null then raw_record end as raw_record,
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

    from classified

)

select * from final
