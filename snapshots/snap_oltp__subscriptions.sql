{#-
    SCD2 history of subscriptions: the source updates a row in place when a subscription
    changes plan, pauses, resumes or is cancelled, and `updated_at` moves with every such
    change. A SQL snapshot rather than a YAML one because the timestamp strategy compares
    `updated_at`, which arrives as text from SQLite and typed from Postgres: it is cast
    here, once, so both sources give a comparable timestamp. A change made and undone
    between two ingests is not seen (each ingest copies a picture of the table, not a log).
-#}
{% snapshot snap_oltp__subscriptions %}

    {{
        config(
            unique_key='subscription_id',
            strategy='timestamp',
            updated_at='updated_at',
        )
    }}

    select
        -- ids
        cast(subscription_id as bigint) as subscription_id,
        cast(user_id as bigint) as user_id,
        cast(plan_id as integer) as plan_id,
        -- state
        lower(trim(status)) as status,
        cast(resume_on as date) as resume_on,
        -- timestamps
        cast(started_at as timestamp) as started_at,
        cast(paused_at as timestamp) as paused_at,
        cast(cancelled_at as timestamp) as cancelled_at,
        cast(updated_at as timestamp) as updated_at,
        -- lineage: the ingest run that first saw this version
        _batch_id,
        _loaded_at

    from {{ source('oltp', 'subscriptions') }}

{% endsnapshot %}
