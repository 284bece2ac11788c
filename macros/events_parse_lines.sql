{#-
    Parse raw viewing-event lines and name the first cleaning rule each one fails.

    Two app generations coexist: app 5 renamed `position_ms` to `playhead_ms` and stamps
    local time with an offset, app 4 stamps UTC with `Z`; `quality` was added mid-range.
    Rules are checked in a fixed order so a line carries exactly one reason. Duplicates
    are decided by the models (they need to see what is already loaded).
-#}
{% macro events_parse_lines(lines_relation) %}
    select
        -- ids
        doc ->> '$.event_id' as event_id,
        doc ->> '$.session_id' as session_id,
        try_cast(doc ->> '$.user_id' as bigint) as user_id,
        doc ->> '$.show_id' as show_id,
        doc ->> '$.episode_id' as episode_id,
        -- what happened
        doc ->> '$.event_type' as event_type,
        coalesce(
            try_cast(doc ->> '$.position_ms' as bigint),
            try_cast(doc ->> '$.playhead_ms' as bigint)
        ) as position_ms,
        try_cast(doc ->> '$.bitrate_kbps' as integer) as bitrate_kbps,
        doc ->> '$.quality' as quality,
        -- device context
        doc ->> '$.device' as device,
        doc ->> '$.context.app_version' as app_version,
        doc ->> '$.context.os' as os,
        doc ->> '$.context.network' as network,
        doc ->> '$.context.country' as country,
        -- timestamps: every offset normalised to UTC
        doc ->> '$.occurred_at' as occurred_at_raw,
        timezone('UTC', try_cast(doc ->> '$.occurred_at' as timestamptz)) as occurred_at,
        -- lineage
        _file,
        _line_no,
        _batch_id,
        _loaded_at,
        line as raw_record,
        is_valid_json
    from (
        select
            *,
            coalesce(json_valid(line), false) as is_valid_json,
            case when json_valid(line) then line::json end as doc
        from {{ lines_relation }}
    )
{% endmacro %}

{% macro events_quarantine_reason(known_users, known_shows) %}
    case
        when not is_valid_json then 'malformed_json'
        when event_id is null then 'null_event_id'
        when user_id is null then 'null_user_id'
        when occurred_at is null then 'unparseable_timestamp'
        when position_ms < 0 then 'negative_position'
        when user_id not in (select user_id from {{ known_users }}) then 'orphan_user'
        when show_id not in (select show_id from {{ known_shows }}) then 'orphan_show'
    end
{% endmacro %}
