{{
    config(
        materialized='incremental',
        unique_key=['as_of_date', 'feature_set_version'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook="{{ feature_batches_start(ref('stg_events__viewing_events'), 'event_date', var('events_lookback_days')) }}",
        post_hook=["{{ feature_batches_rest() }}", "{{ register_feature_set('churn_user_daily') }}"],
    )
}}

{#-
    Churn features: one row per subscribed user per as-of day, describing everything up
    to the end of that day (feature_timestamp = the instant the day closed).
    Versioned: the table keeps the rows of every version of this definition; a new
    version is built in full beside the old ones, which stay readable.
-#}

{% set version = feature_set_version() %}

with

activity as (

    select * from {{ ref('fct_user_activity_daily') }}

),

users as (

    select * from {{ ref('dim_users') }}

),

subscription_periods as (

    select * from {{ ref('fct_subscriptions') }}

),

price_history as (

    -- SCD2: one row per list price and the period it was valid in
    select * from {{ ref('snap_oltp__plan_prices') }}

),

currencies as (

    select * from {{ ref('currencies') }}

),

plans as (

    select * from {{ ref('stg_oltp__plans') }}

),

bounds as (

    -- the as-of days this query computes (this batch of the build, see the macro:
    -- late data changes recent days, so a rebuild starts this version's last days back),
    -- and the days whose viewing data is in the warehouse
    {{ feature_build_window(ref('stg_events__viewing_events'), 'event_date', var('events_lookback_days')) }}

),

subscribed_days as (

    -- every day a user was subscribed: from signup to the day before cancellation;
    -- 90 days before the first rebuilt day are read so every window is complete
    select
        users.user_id,
        users.signup_at,
        users.country,
        users.acquisition_channel,
        users.age_band_at_signup,
        generate_series(
            greatest(users.signup_at::date, bounds.data_from, bounds.first_day - interval 90 day)::date,
            least(coalesce(users.cancelled_at::date - 1, bounds.last_day), bounds.last_day),
            interval 1 day
        ) as days
    from users
    cross join bounds

),

sessions_before_spine as (

    -- each user's sessions on the days before the spine's first (a rebuild reads only the 90
    -- days before its first day): the lifetime rate adds them, so a rebuild's values equal
    -- a full refresh's (whole sessions: integer sums are exact in any order)
    select
        users.user_id,
        sum(activity.viewing_sessions) as viewing_sessions
    from users
    cross join bounds
    inner join activity
        on
            users.user_id = activity.user_id
            and activity.activity_date >= greatest(users.signup_at::date, bounds.data_from)
            and activity.activity_date < bounds.first_day - interval 90 day
    group by users.user_id

),

spine as (

    select
        user_id,
        signup_at,
        country,
        acquisition_channel,
        age_band_at_signup,
        unnest(days)::date as as_of_date
    from subscribed_days

),

daily as (

    select
        spine.*,
        coalesce(activity.viewing_sessions, 0) as viewing_sessions,
        coalesce(activity.watched_seconds, 0) as watched_seconds,
        coalesce(activity.mobile_sessions, 0) as mobile_sessions,
        coalesce(activity.distinct_genres, 0) as distinct_genres,
        coalesce(activity.failed_charges, 0) as failed_charges,
        coalesce(activity.refunds, 0) as refunds,
        coalesce(activity.tickets, 0) as tickets,
        coalesce(activity.billing_tickets, 0) as billing_tickets,
        coalesce(activity.cancellation_tickets, 0) as cancellation_tickets,
        coalesce(activity.playback_tickets, 0) as playback_tickets,
        activity.known_at
    from spine
    left join activity
        on
            spine.user_id = activity.user_id
            and spine.as_of_date = activity.activity_date

),

windowed as (

    select
        *,
        -- whole seconds are summed and then divided: a sum of fractions would depend on the
        -- order the window adds them in, and an incremental build (fewer rows per user)
        -- would differ from a full refresh in the last bits
        sum(watched_seconds) over last_7d / 60.0 as watch_minutes_7d,
        sum(watched_seconds) over last_14d / 60.0 as watch_minutes_14d,
        sum(watched_seconds) over last_30d / 60.0 as watch_minutes_30d,
        sum(viewing_sessions) over last_7d as sessions_7d,
        sum(viewing_sessions) over last_14d as sessions_14d,
        sum(viewing_sessions) over last_30d as sessions_30d,
        sum(viewing_sessions) over last_90d as sessions_90d,
        sum(viewing_sessions) over to_date as sessions_in_spine,
        count(*) filter (where viewing_sessions > 0) over last_30d as active_days_30d,
        -- the subscribed days each window holds: fewer than its length for new users and
        -- near the start of the data, so rates divide by these
        count(*) over last_7d as observed_days_7d,
        count(*) over last_30d as observed_days_30d,
        count(*) over last_90d as observed_days_90d,
        max(case when viewing_sessions > 0 then as_of_date end) over to_date as last_viewed_date,
        sum(mobile_sessions) over last_30d as mobile_sessions_30d,
        sum(distinct_genres) over last_30d as genre_days_30d,
        sum(failed_charges) over last_30d as failed_payments_30d,
        sum(failed_charges) over last_90d as failed_payments_90d,
        sum(refunds) over last_90d as refunds_90d,
        sum(tickets) over last_30d as tickets_30d,
        sum(billing_tickets) over last_30d as billing_tickets_30d,
        sum(cancellation_tickets) over last_30d as cancellation_tickets_30d,
        sum(playback_tickets) over last_30d as playback_tickets_30d,
        -- a value is known once the last record it depends on has landed
        max(known_at) over last_90d as inputs_known_at
    from daily
    -- the spine holds each user's days once and without gaps, so the last n rows are the last
    -- n days: row frames give what day ranges would, in about half the time
    window
        last_7d as (partition by user_id order by as_of_date rows between 6 preceding and current row),
        last_14d as (partition by user_id order by as_of_date rows between 13 preceding and current row),
        last_30d as (partition by user_id order by as_of_date rows between 29 preceding and current row),
        last_90d as (partition by user_id order by as_of_date rows between 89 preceding and current row),
        to_date as (partition by user_id order by as_of_date rows between unbounded preceding and current row)

),

plan_on_day as (

    -- the plan in force when the as-of day closed (the instant the features describe);
    -- before the first recorded period, the earliest
    select
        windowed.user_id,
        windowed.as_of_date,
        subscription_periods.plan_id
    from windowed
    inner join subscription_periods on windowed.user_id = subscription_periods.user_id
    where windowed.as_of_date >= (select bounds.first_day from bounds)
    qualify row_number() over (
        partition by windowed.user_id, windowed.as_of_date
        order by
            (
                subscription_periods.valid_from < windowed.as_of_date + interval 1 day
                and coalesce(subscription_periods.valid_to >= windowed.as_of_date + interval 1 day, true)
            ) desc,
            subscription_periods.valid_from
    ) = 1

),

usd_prices as (

    -- the USD list prices of every period, converted as stg_oltp__plan_prices converts them
    select
        price_history.plan_id,
        {{ minor_to_usd(
            'price_history.monthly_price_minor', 'currencies.minor_exponent', 'currencies.usd_per_unit'
        ) }} as monthly_price_usd,
        price_history.dbt_valid_from as valid_from,
        price_history.dbt_valid_to as valid_to
    from price_history
    left join currencies on price_history.currency = currencies.currency
    where price_history.currency = 'USD'

),

price_on_day as (

    -- the list price valid when the as-of day closed, point in time: a price change keeps the
    -- old price on the days before it, through a full refresh too (periods do not overlap, so
    -- at most one is in force); before the first price the snapshot knows, the earliest
    select
        plan_days.plan_id,
        plan_days.as_of_date,
        coalesce(
            any_value(usd_prices.monthly_price_usd) filter (
                where usd_prices.valid_from < plan_days.as_of_date + interval 1 day
                and coalesce(usd_prices.valid_to >= plan_days.as_of_date + interval 1 day, true)
            ),
            arg_min(usd_prices.monthly_price_usd, usd_prices.valid_from)
        ) as monthly_price_usd
    from (
        select distinct
            plan_id,
            as_of_date
        from plan_on_day
    ) as plan_days
    inner join usd_prices on plan_days.plan_id = usd_prices.plan_id
    group by plan_days.plan_id, plan_days.as_of_date

),

final as (

    select
        -- keys and time
        windowed.user_id::bigint as user_id,
        windowed.as_of_date::date as as_of_date,
        (windowed.as_of_date + interval 1 day)::timestamp as feature_timestamp,
        greatest(
            windowed.as_of_date + interval 1 day, windowed.inputs_known_at
        )::timestamp as created_at,
        '{{ version }}'::varchar as feature_set_version,
        -- engagement
        windowed.watch_minutes_7d::double as watch_minutes_7d,
        windowed.watch_minutes_14d::double as watch_minutes_14d,
        windowed.watch_minutes_30d::double as watch_minutes_30d,
        windowed.sessions_7d::bigint as sessions_7d,
        windowed.sessions_14d::bigint as sessions_14d,
        windowed.sessions_30d::bigint as sessions_30d,
        windowed.active_days_30d::bigint as active_days_30d,
        -- no raw 90-day counts or window lengths: where the data is younger than 90 days they
        -- follow the calendar (how far into the data a row is), which a model learns and
        -- the later days it scores do not share (bench row 7 measured it); rates do not
        -- how often a user starts a session grows exponentially with how engaged they are, so
        -- the log of the daily rate is linear in it: a short window follows the recent wander,
        -- the long one the lasting level (half a session of prior keeps the log finite)
        ln((windowed.sessions_7d + 0.5) / windowed.observed_days_7d)::double as log_session_rate_7d,
        ln((windowed.sessions_30d + 0.5) / windowed.observed_days_30d)::double as log_session_rate_30d,
        ln((windowed.sessions_90d + 0.5) / windowed.observed_days_90d)::double as log_session_rate_90d,
        -- since the user was first seen (signup, or the data's first day), not capped at 90
        -- days: the longer the history, the better it knows the lasting level
        ln(
            (coalesce(sessions_before_spine.viewing_sessions, 0) + windowed.sessions_in_spine + 0.5)
            / (windowed.as_of_date - greatest(windowed.signup_at::date, bounds.data_from) + 1)
        )::double as log_session_rate_to_date,
        -- the last week against the last 90 days, in log rates (> 0: watching more lately)
        (
            ln((windowed.sessions_7d + 0.5) / windowed.observed_days_7d)
            - ln((windowed.sessions_90d + 0.5) / windowed.observed_days_90d)
        )::double as session_trend_7d_90d,
        (windowed.as_of_date - coalesce(windowed.last_viewed_date, windowed.signup_at::date))::integer
            as days_since_last_view,
        -- this week against the week before, in [-1, 1]
        (
            (2 * windowed.watch_minutes_7d - windowed.watch_minutes_14d)
            / (windowed.watch_minutes_14d + 1.0)
        )::double as watch_trend_7d,
        (windowed.watch_minutes_30d / nullif(windowed.sessions_30d, 0))::double as minutes_per_session_30d,
        windowed.genre_days_30d::bigint as genre_days_30d,
        (windowed.mobile_sessions_30d / nullif(windowed.sessions_30d, 0))::double as mobile_share_30d,
        -- billing
        windowed.failed_payments_30d::bigint as failed_payments_30d,
        -- the hazard rises with having had one at all, not with how many (retries)
        (windowed.failed_payments_30d > 0)::integer as has_failed_payment_30d,
        windowed.failed_payments_90d::bigint as failed_payments_90d,
        windowed.refunds_90d::bigint as refunds_90d,
        -- support
        windowed.tickets_30d::bigint as tickets_30d,
        (windowed.tickets_30d > 0)::integer as has_ticket_30d,
        windowed.billing_tickets_30d::bigint as billing_tickets_30d,
        windowed.cancellation_tickets_30d::bigint as cancellation_tickets_30d,
        windowed.playback_tickets_30d::bigint as playback_tickets_30d,
        -- account
        plans.plan_name::varchar as plan_name,
        price_on_day.monthly_price_usd::double as plan_price_usd,
        (windowed.as_of_date - windowed.signup_at::date)::integer as tenure_days,
        -- the hazard falls with the log of tenure in months
        ln(1 + (windowed.as_of_date - windowed.signup_at::date) / 30.0)::double as log_tenure_months,
        windowed.age_band_at_signup::varchar as age_band,
        windowed.country::varchar as country,
        windowed.acquisition_channel::varchar as acquisition_channel

    from windowed
    cross join bounds
    left join sessions_before_spine on windowed.user_id = sessions_before_spine.user_id
    left join plan_on_day
        on
            windowed.user_id = plan_on_day.user_id
            and windowed.as_of_date = plan_on_day.as_of_date
    left join plans on plan_on_day.plan_id = plans.plan_id
    left join price_on_day
        on
            plan_on_day.plan_id = price_on_day.plan_id
            and windowed.as_of_date = price_on_day.as_of_date
    where windowed.as_of_date >= bounds.first_day

)

select * from final
