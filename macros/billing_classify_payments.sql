{#-
    Parse the billing vendor's CSV rows and name the first cleaning rule each one fails.

    Shared by stg_billing__payments (reason is null) and quarantine_billing__payments
    (reason is not null), so every raw row lands in exactly one of them. A row carries one
    reason, checked in this order: duplicate, null_amount, unparseable_date,
    orphan_customer. A row without a payment_id cannot be deduplicated or traced, so it is
    quarantined first (the simulator never produces one).
    `known_users` must have columns user_id and email (normalised).
-#}
{% macro billing_classify_payments(rows_relation, known_users) %}
    select
        -- ids
        payments.payment_id,
        payments.customer_ref,
        known_users.user_id,
        -- payment
        {{ normalise_email('payments.customer_email') }} as customer_email,
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
        to_json(payments)::varchar as raw_record,
        case
            when payments.payment_id is null then 'null_payment_id'
            -- the vendor re-sends rows: the first copy (by file, then line) is the payment
            when row_number() over (
                partition by payments.payment_id
                order by payments._file, payments._line_no
            ) > 1 then 'duplicate'
            when try_cast(payments.amount_minor as bigint) is null then 'null_amount'
            when {{ billing_parse_created_at('payments.created') }} is null then 'unparseable_date'
            when known_users.user_id is null then 'orphan_customer'
        end as quarantine_reason
    from {{ rows_relation }} as payments
    left join {{ known_users }} as known_users
        on {{ normalise_email('payments.customer_email') }} = known_users.email
{% endmacro %}
