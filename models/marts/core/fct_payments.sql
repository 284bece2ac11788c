with

payments as (

    select * from {{ ref('stg_billing__payments') }}

),

final as (

    select
        -- ids
        payment_id::varchar as payment_id,
        user_id::bigint as user_id,
        customer_ref::varchar as customer_ref,
        -- payment
        payment_type::varchar as payment_type,
        status::varchar as status,
        is_successful::boolean as is_successful,
        failure_reason::varchar as failure_reason,
        currency::varchar as currency,
        amount::decimal(18, 2) as amount,
        amount_usd::decimal(18, 2) as amount_usd,
        -- timestamps
        created_at::timestamp as created_at,
        created_at::date as created_date

    from payments

)

select * from final
