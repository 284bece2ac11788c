with

subscriptions as (

    select * from {{ source('oltp', 'subscriptions') }}

),

renamed as (

    select
        -- ids
        cast(subscription_id as bigint) as subscription_id,
        cast(user_id as bigint) as user_id,
        cast(plan_id as integer) as plan_id,
        -- state (current only: the history is in snap_oltp__subscriptions)
        lower(trim(status)) as status,
        lower(trim(status)) = 'active' as is_active,
        cast(resume_on as date) as resume_on,
        -- timestamps: text from SQLite, typed from Postgres
        cast(started_at as timestamp) as started_at,
        cast(paused_at as timestamp) as paused_at,
        cast(cancelled_at as timestamp) as cancelled_at,
        cast(updated_at as timestamp) as updated_at,
        -- lineage
        _batch_id,
        _loaded_at

    from subscriptions

)

select * from renamed
