{#-
    Every row of the billing vendor's CSV exports, parsed, with the first cleaning rule it
    fails (null when clean). stg_billing__payments keeps the clean rows and
    quarantine_billing__payments the rest, so every raw row lands in exactly one of them.

    Rules, in order: oversized_record (a row over LOOPLINE_MAX_RECORD_BYTES, loaded as a
    stub: its position and size, not its payload), null_payment_id (a row without an id cannot be deduplicated or traced;
    the simulator never produces one), duplicate (the vendor re-sends rows: the first copy
    by file, then line, is the payment), null_amount, unparseable_date, orphan_customer
    (the normalised email matches no user the source system knows).
-#}

with

payments_rows as (

    select
        *,
        -- the whole row as it arrived (a stub's bookkeeping columns left out)
        to_json(
            struct_pack(*columns(* exclude (_stub_reason, _record_bytes)))
        )::varchar as row_as_json
    from {{ source('billing', 'payments_rows') }}

),

known_users as (

    -- clean and quarantined users alike: a quarantined user still exists at the source
    select
        user_id,
        email
    from {{ ref('base_oltp__users') }}

),

currencies as (

    select * from {{ ref('currencies') }}

),

parsed as (

    select
        -- ids
        payments.payment_id,
        payments.customer_ref,
        known_users.user_id,
        -- customer (matched to a user on the normalised email)
        {{ normalise_email('payments.customer_email') }} as customer_email,
        -- payment
        lower(trim(payments.type)) as payment_type,
        lower(trim(payments.status)) as status,
        try_cast(payments.amount_minor as bigint) as amount_minor,
        upper(trim(payments.currency)) as currency,
        nullif(trim(payments.failure_reason), '') as failure_reason,
        -- timestamps
        {{ billing_parse_created_at('payments.created') }} as created_at,
        -- lineage
        payments._file,
        payments._line_no,
        payments._batch_id,
        payments._loaded_at,
        -- the whole source row as it arrived, or for a stub (a row the loader did not load)
        -- only why and its size
        payments._stub_reason,
        coalesce(
            {{ stub_record('payments._stub_reason', 'payments._record_bytes') }},
            payments.row_as_json
        ) as raw_record,
        row_number() over (
            partition by payments.payment_id
            order by payments._file, payments._line_no
        ) as copy_number

    from payments_rows as payments
    left join known_users
        on {{ normalise_email('payments.customer_email') }} = known_users.email

),

classified as (

    select
        -- ids
        parsed.payment_id,
        parsed.customer_ref,
        parsed.user_id,
        parsed.customer_email,
        -- payment
        parsed.payment_type,
        parsed.status,
        parsed.status = 'succeeded' as is_successful,
        parsed.failure_reason,
        -- amounts: minor units are exact; major units and USD use the currency seed
        -- (a currency missing from the seed leaves them null, which the tests catch)
        parsed.currency,
        parsed.amount_minor,
        {{ minor_to_major('parsed.amount_minor', 'currencies.minor_exponent') }} as amount,
        {{ minor_to_usd(
            'parsed.amount_minor', 'currencies.minor_exponent', 'currencies.usd_per_unit'
        ) }} as amount_usd,
        -- timestamps
        parsed.created_at,
        -- verdict
        case
            when parsed._stub_reason is not null then parsed._stub_reason
            when parsed.payment_id is null then 'null_payment_id'
            when parsed.copy_number > 1 then 'duplicate'
            when parsed.amount_minor is null then 'null_amount'
            when parsed.created_at is null then 'unparseable_date'
            when parsed.user_id is null then 'orphan_customer'
        end as quarantine_reason,
        parsed.raw_record,
        -- lineage
        parsed._file,
        parsed._line_no,
        parsed._batch_id,
        parsed._loaded_at

    from parsed
    left join currencies
        on parsed.currency = currencies.currency

)

select * from classified
