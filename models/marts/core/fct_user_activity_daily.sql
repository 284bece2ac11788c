{#- One row per user per UTC day on which the user watched, paid or wrote to support. -#}

with

sessions as (

    select * from {{ ref('fct_viewing_sessions') }}

),

payments as (

    select * from {{ ref('fct_payments') }}

),

tickets as (

    select * from {{ ref('stg_support__tickets') }}

),

viewing as (

    select
        user_id,
        session_date as activity_date,
        count(*) as viewing_sessions,
        sum(watched_seconds) as watched_seconds,
        sum(episodes_watched) as episodes_watched,
        count(distinct first_show_id) as distinct_shows,
        count(distinct device) as devices,
        count(*) filter (where device = 'mobile') as mobile_sessions,
        count(distinct first_show_genre) as distinct_genres,
        max(landed_at) as known_at
    from sessions
    group by 1, 2

),

billing as (

    select
        user_id,
        created_date as activity_date,
        count(*) filter (where payment_type = 'charge' and is_successful) as successful_charges,
        count(*) filter (where payment_type = 'charge' and not is_successful) as failed_charges,
        count(*) filter (where payment_type = 'refund') as refunds,
        -- the vendor exports a day's payments at the end of that day
        max(created_date) + interval 1 day as known_at
    from payments
    where user_id is not null
    group by 1, 2

),

support as (

    select
        user_id,
        created_at::date as activity_date,
        count(*) as tickets,
        count(*) filter (where ticket_category = 'cancellation') as cancellation_tickets,
        count(*) filter (where ticket_category = 'billing') as billing_tickets,
        count(*) filter (where ticket_category = 'playback') as playback_tickets,
        -- the support desk drops a day's tickets at the end of that day
        max(created_at::date) + interval 1 day as known_at
    from tickets
    where user_id is not null
    group by 1, 2

),

days as (

    select
        user_id,
        activity_date
    from viewing
    union
    select
        user_id,
        activity_date
    from billing
    union
    select
        user_id,
        activity_date
    from support

),

final as (

    select
        -- grain
        days.user_id::bigint as user_id,
        days.activity_date::date as activity_date,
        -- viewing
        coalesce(viewing.viewing_sessions, 0)::bigint as viewing_sessions,
        coalesce(viewing.watched_seconds, 0)::bigint as watched_seconds,
        coalesce(viewing.episodes_watched, 0)::bigint as episodes_watched,
        coalesce(viewing.distinct_shows, 0)::bigint as distinct_shows,
        coalesce(viewing.devices, 0)::bigint as devices,
        coalesce(viewing.mobile_sessions, 0)::bigint as mobile_sessions,
        coalesce(viewing.distinct_genres, 0)::bigint as distinct_genres,
        -- billing
        coalesce(billing.successful_charges, 0)::bigint as successful_charges,
        coalesce(billing.failed_charges, 0)::bigint as failed_charges,
        coalesce(billing.refunds, 0)::bigint as refunds,
        -- support
        coalesce(support.tickets, 0)::bigint as tickets,
        coalesce(support.cancellation_tickets, 0)::bigint as cancellation_tickets,
        coalesce(support.billing_tickets, 0)::bigint as billing_tickets,
        coalesce(support.playback_tickets, 0)::bigint as playback_tickets,
        -- when the last record behind this row reached the landing area
        greatest(viewing.known_at, billing.known_at, support.known_at)::timestamp as known_at

    from days
    left join viewing
        on days.user_id = viewing.user_id and days.activity_date = viewing.activity_date
    left join billing
        on days.user_id = billing.user_id and days.activity_date = billing.activity_date
    left join support
        on days.user_id = support.user_id and days.activity_date = support.activity_date

)

select * from final
