{#-
    Parse raw ticket lines (NDJSON) and name the first cleaning rule each one fails.

    Shared by stg_support__tickets (reason is null) and quarantine_support__tickets (reason
    is not null), so every raw line lands in exactly one of them. A line that is not JSON
    has no requester to look up, so malformed_json is checked before orphan_requester;
    a line without a ticket_id cannot be traced and is quarantined too.
    `known_users` must have columns user_id and email (normalised).
-#}
{% macro support_classify_tickets(lines_relation, known_users) %}
    select
        -- ids
        tickets.doc ->> '$.ticket_id' as ticket_id,
        known_users.user_id,
        -- ticket
        {{ normalise_email("tickets.doc ->> '$.requester_email'") }} as requester_email,
        lower(trim(tickets.doc ->> '$.channel')) as channel,
        tickets.doc ->> '$.subject' as subject,
        tickets.doc ->> '$.body' as body,
        -- timestamps
        {{ parse_utc_timestamp("tickets.doc ->> '$.created_at'") }} as created_at,
        -- lineage
        tickets._file,
        tickets._line_no,
        tickets._batch_id,
        tickets._loaded_at,
        tickets.line as raw_record,
        case
            when not tickets.is_valid_json then 'malformed_json'
            when tickets.doc ->> '$.ticket_id' is null then 'null_ticket_id'
            when known_users.user_id is null then 'orphan_requester'
        end as quarantine_reason
    from (
        select
            *,
            coalesce(json_valid(line), false) as is_valid_json,
            case when json_valid(line) then line::json end as doc
        from {{ lines_relation }}
    ) as tickets
    left join {{ known_users }} as known_users
        on {{ normalise_email("tickets.doc ->> '$.requester_email'") }} = known_users.email
{% endmacro %}
