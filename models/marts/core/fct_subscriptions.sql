{#- One row per period a subscription spent in one state (plan and status), from the
    SCD2 snapshot of the source table that is updated in place. -#}

with

history as (

    select * from {{ ref('snap_oltp__subscriptions') }}

),

plans as (

    select * from {{ ref('stg_oltp__plans') }}

),

periods as (

    select
        -- ids
        history.dbt_scd_id::varchar as subscription_period_id,
        history.subscription_id::bigint as subscription_id,
        history.user_id::bigint as user_id,
        history.plan_id::integer as plan_id,
        -- state
        plans.plan_name::varchar as plan_name,
        history.status::varchar as status,
        (history.dbt_valid_to is null)::boolean as is_current,
        -- timestamps
        history.dbt_valid_from::timestamp as valid_from,
        history.dbt_valid_to::timestamp as valid_to,
        try_cast(history.started_at as timestamp) as started_at,
        try_cast(history.cancelled_at as timestamp) as cancelled_at

    from history
    left join plans on try_cast(history.plan_id as integer) = plans.plan_id

)

select * from periods
