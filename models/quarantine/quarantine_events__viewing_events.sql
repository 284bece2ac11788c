{{
    config(
        materialized='incremental',
        unique_key=['_file', '_line_no'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with

lines as (

    select * from {{ source('events', 'events_lines') }}
    {% if is_incremental() %}
    -- only lines loaded since the last build; the unique key makes a re-read harmless
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

    select user_id from {{ ref('stg_oltp__users') }}
    union
    select user_id from {{ ref('quarantine_oltp__users') }}

),

known_shows as (

    select show_id from {{ ref('stg_catalogue__shows') }}

),

kept as (

    -- which physical line staging kept for each event id
    select
        _file as kept_file,
        _line_no as kept_line_no
    from {{ ref('stg_events__viewing_events') }}

),

ruled as (

    select
        *,
        {{ events_quarantine_reason('known_users', 'known_shows') }} as rule_reason
    from parsed

),

classified as (

    -- a clean line that staging did not keep is a later copy of an event it holds
    select
        ruled.*,
        coalesce(
            ruled.rule_reason,
            case when kept.kept_file is null then 'duplicate' end
        ) as quarantine_reason
    from ruled
    left join kept
        on
            ruled._file = kept.kept_file
            and ruled._line_no = kept.kept_line_no

),

quarantined as (

    select
        event_id,
        user_id,
        show_id,
        occurred_at_raw,
        quarantine_reason,
        raw_record,
        _file,
        _line_no,
        _batch_id,
        _loaded_at,
        '{{ invocation_id }}' as _dbt_invocation_id
    from classified
    where quarantine_reason is not null

)

select * from quarantined
