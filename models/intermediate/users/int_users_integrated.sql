{#-
    One row per user of the OLTP database, joined to what the other systems know of them.

    Matching rule (explicit, in this order of trust):
      - viewing events carry the account's user_id: matched on user_id;
      - the billing vendor and the support desk only know an email address: matched on
        the normalised address lower(trim(email)), which staging already resolved to a
        user_id; a billing customer_ref seen with more than one user is ambiguous and
        left unmatched.
-#}

with

users as (

    select * from {{ ref('stg_oltp__users') }}

),

payments as (

    select * from {{ ref('stg_billing__payments') }}

),

tickets as (

    select * from {{ ref('stg_support__tickets') }}

),

sessions as (

    select * from {{ ref('int_viewing_events_sessionized') }}

),

billing_customers as (

    select
        customer_ref,
        min(user_id) as user_id,
        count(distinct user_id) as matched_users,
        count(*) as payments,
        count(*) filter (where not is_successful) as failed_payments,
        min(created_at) as first_payment_at,
        max(created_at) as last_payment_at
    from payments
    where user_id is not null
    group by customer_ref

),

billing as (

    select
        user_id,
        arg_max(customer_ref, last_payment_at) as billing_customer_ref,
        sum(payments) as payments,
        sum(failed_payments) as failed_payments,
        min(first_payment_at) as first_payment_at,
        max(last_payment_at) as last_payment_at
    from billing_customers
    -- a vendor reference shared by two accounts cannot be attributed to either
    where matched_users = 1
    group by user_id

),

support as (

    select
        user_id,
        count(*) as tickets,
        min(created_at) as first_ticket_at,
        max(created_at) as last_ticket_at
    from tickets
    where user_id is not null
    group by user_id

),

viewing as (

    select
        user_id,
        count(*) as viewing_sessions,
        min(started_at) as first_viewed_at,
        max(ended_at) as last_viewed_at
    from sessions
    group by user_id

),

integrated as (

    select
        -- ids
        users.user_id,
        users.email,
        billing.billing_customer_ref,
        -- matches
        billing.user_id is not null as has_billing_match,
        support.user_id is not null as has_support_match,
        viewing.user_id is not null as has_viewing_match,
        -- counts
        coalesce(billing.payments, 0) as payments,
        coalesce(billing.failed_payments, 0) as failed_payments,
        coalesce(support.tickets, 0) as tickets,
        coalesce(viewing.viewing_sessions, 0) as viewing_sessions,
        -- timestamps
        billing.first_payment_at,
        billing.last_payment_at,
        support.first_ticket_at,
        support.last_ticket_at,
        viewing.first_viewed_at,
        viewing.last_viewed_at

    from users
    left join billing on users.user_id = billing.user_id
    left join support on users.user_id = support.user_id
    left join viewing on users.user_id = viewing.user_id

)

select * from integrated
