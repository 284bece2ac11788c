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

clean as (

    -- the rest is in quarantine_support__tickets
    select * from classified
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        ticket_id,
        user_id,
        -- requester (matched to a user on the normalised email)
        requester_email,
        -- ticket
        channel,
        subject,
        body,
        -- the helpdesk has no category field: derive one from the text (see the macro)
        {{ support_ticket_category("coalesce(subject, '') || ' ' || coalesce(body, '')") }}
            as ticket_category,
        -- timestamps
        created_at,
        -- lineage
        _file,
        _line_no,
        _batch_id,
        _loaded_at

    from clean

)

select * from renamed
