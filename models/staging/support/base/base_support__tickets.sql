{#-
    Every line of the helpdesk's ticket exports (NDJSON), parsed, with the first cleaning
    rule it fails (null when clean). stg_support__tickets keeps the clean rows and
    quarantine_support__tickets the rest, so every raw line lands in exactly one of them.

    Rules, in order: oversized_record (a line over LOOPLINE_MAX_RECORD_BYTES, loaded as a
    stub: its position and size, not its payload), malformed_json (a line that is not JSON has no requester to check, so
    it is not called an orphan), null_ticket_id (a line without an id cannot be traced),
    duplicate (the helpdesk delivers a ticket again in a later file: the copy loaded first,
    by load time, file and line, is the ticket; the same rule as events and payments),
    orphan_requester (the normalised email matches no user the source system knows).
-#}

with

tickets_lines as (

    select * from {{ source('support', 'tickets_lines') }}

),

known_users as (

    -- clean and quarantined users alike: a quarantined user still exists at the source
    select
        user_id,
        email
    from {{ ref('base_oltp__users') }}

),

documents as (

    select
        *,
        coalesce(json_valid(line), false) as is_valid_json,
        case when json_valid(line) then line::json end as doc
    from tickets_lines

),

parsed as (

    select
        -- ids
        doc ->> '$.ticket_id' as ticket_id,
        -- ticket
        {{ normalise_email("doc ->> '$.requester_email'") }} as requester_email,
        lower(trim(doc ->> '$.channel')) as channel,
        doc ->> '$.subject' as subject,
        doc ->> '$.body' as body,
        -- timestamps
        {{ parse_utc_timestamp("doc ->> '$.created_at'") }} as created_at,
        -- lineage: a stub (a record the loader did not load) keeps only why and its size
        is_valid_json,
        _stub_reason,
        coalesce(
            {{ stub_record('_stub_reason', '_record_bytes') }}, line
        ) as raw_record,
        _file,
        _line_no,
        _batch_id,
        _loaded_at,
        row_number() over (
            partition by doc ->> '$.ticket_id'
            order by _loaded_at, _file, _line_no
        ) as copy_number

    from documents

),

classified as (

    select
        -- ids
        parsed.ticket_id,
        known_users.user_id,
        -- requester (matched to a user on the normalised email)
        parsed.requester_email,
        -- ticket
        parsed.channel,
        parsed.subject,
        parsed.body,
        -- the helpdesk has no category field: derive one from the text (see the macro)
        {{ support_ticket_category("coalesce(parsed.subject, '') || ' ' || coalesce(parsed.body, '')") }}
            as ticket_category,
        -- timestamps
        parsed.created_at,
        -- verdict
        case
            when parsed._stub_reason is not null then parsed._stub_reason
            when not parsed.is_valid_json then 'malformed_json'
            when parsed.ticket_id is null then 'null_ticket_id'
            when parsed.copy_number > 1 then 'duplicate'
            when known_users.user_id is null then 'orphan_requester'
        end as quarantine_reason,
        parsed.raw_record,
        -- lineage
        parsed._file,
        parsed._line_no,
        parsed._batch_id,
        parsed._loaded_at

    from parsed
    left join known_users
        on parsed.requester_email = known_users.email

)

select * from classified
