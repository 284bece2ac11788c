{#-
    Churn labels: one row per subscribed user per as-of day whose whole label window
    has been observed. churned_within_30d = the subscription was cancelled in
    (as_of_date, as_of_date + 30 days]. The label window starts after the instant the
    features describe (event_timestamp = end of the as-of day), so features built
    point-in-time at event_timestamp cannot see it.
-#}

{% set label_window_days = 30 %}

with

users as (

    select * from {{ ref('dim_users') }}

),

bounds as (

    select
        min(event_date) as data_from,
        max(event_date) as data_through
    from {{ ref('stg_events__viewing_events') }}

),

subscribed_days as (

    select
        users.user_id,
        users.cancelled_at,
        generate_series(
            greatest(users.signup_at::date, bounds.data_from),
            least(
                coalesce(users.cancelled_at::date - 1, bounds.data_through),
                bounds.data_through - {{ label_window_days }}
            ),
            interval 1 day
        ) as days
    from users
    cross join bounds

),

spine as (

    select
        user_id,
        cancelled_at,
        unnest(days)::date as as_of_date
    from subscribed_days

),

labelled as (

    select
        user_id::bigint as user_id,
        as_of_date::date as as_of_date,
        (as_of_date + interval 1 day)::timestamp as event_timestamp,
        (as_of_date + interval {{ label_window_days + 1 }} day)::timestamp as label_window_end,
        coalesce(
            cancelled_at >= as_of_date + interval 1 day
            and cancelled_at < as_of_date + interval {{ label_window_days + 1 }} day,
            false
        ) as churned_within_30d
    from spine

)

select * from labelled
