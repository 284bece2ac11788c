with

users as (

    select * from {{ ref('stg_oltp__users') }}

),

integrated as (

    select * from {{ ref('int_users_integrated') }}

),

subscriptions as (

    select * from {{ ref('stg_oltp__subscriptions') }}

),

plans as (

    select * from {{ ref('stg_oltp__plans') }}

),

final as (

    select
        -- ids
        users.user_id::bigint as user_id,
        integrated.billing_customer_ref::varchar as billing_customer_ref,
        subscriptions.subscription_id::bigint as subscription_id,
        -- attributes
        users.email::varchar as email,
        users.country::varchar as country,
        users.acquisition_channel::varchar as acquisition_channel,
        users.primary_device::varchar as primary_device,
        users.birth_date::date as birth_date,
        case
            when date_diff('year', users.birth_date, users.signup_at::date) < 25 then '18-24'
            when date_diff('year', users.birth_date, users.signup_at::date) < 35 then '25-34'
            when date_diff('year', users.birth_date, users.signup_at::date) < 50 then '35-49'
            when date_diff('year', users.birth_date, users.signup_at::date) < 65 then '50-64'
            else '65+'
        end::varchar as age_band_at_signup,
        -- current subscription
        subscriptions.status::varchar as subscription_status,
        plans.plan_name::varchar as plan_name,
        (subscriptions.status = 'cancelled')::boolean as is_churned,
        -- integration
        integrated.has_billing_match::boolean as has_billing_match,
        integrated.has_support_match::boolean as has_support_match,
        integrated.payments::bigint as payments,
        integrated.failed_payments::bigint as failed_payments,
        integrated.tickets::bigint as tickets,
        integrated.viewing_sessions::bigint as viewing_sessions,
        -- timestamps
        users.signup_at::timestamp as signup_at,
        subscriptions.cancelled_at::timestamp as cancelled_at,
        integrated.last_viewed_at::timestamp as last_viewed_at

    from users
    left join integrated on users.user_id = integrated.user_id
    left join subscriptions on users.user_id = subscriptions.user_id
    left join plans on subscriptions.plan_id = plans.plan_id

)

select * from final
