with

payments_rows as (

    select * from {{ source('billing', 'payments_rows') }}

),

known_users as (

    -- a quarantined user still exists at the source: their payments are not orphans
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

currencies as (

    select * from {{ ref('currencies') }}

),

classified as (

    {{ billing_classify_payments('payments_rows', 'known_users') }}

),

clean as (

    -- the rest is in quarantine_billing__payments
    select * from classified
    where quarantine_reason is null

),

renamed as (

    select
        -- ids
        clean.payment_id,
        clean.customer_ref,
        clean.user_id,
        -- customer (matched to a user on the normalised email)
        clean.customer_email,
        -- payment
        clean.payment_type,
        clean.status,
        clean.status = 'succeeded' as is_successful,
        clean.failure_reason,
        -- amounts: minor units are exact; major units and USD use the currency seed
        -- (a currency missing from the seed leaves them null, which the tests catch)
        clean.currency,
        clean.amount_minor,
        {{ minor_to_major('clean.amount_minor', 'currencies.minor_exponent') }} as amount,
        {{ minor_to_usd(
            'clean.amount_minor', 'currencies.minor_exponent', 'currencies.usd_per_unit'
        ) }} as amount_usd,
        -- timestamps
        clean.created_at,
        -- lineage
        clean._file,
        clean._line_no,
        clean._batch_id,
        clean._loaded_at

    from clean
    left join currencies
        on clean.currency = currencies.currency

)

select * from renamed
