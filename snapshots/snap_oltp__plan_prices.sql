{#-
    SCD2 history of list prices: the source keeps one row per plan and currency and updates
    it in place when a price changes (a price rise), moving `updated_at`. Features read the
    price valid on each day from here, so a full refresh after a price change keeps the old
    price on the days before it. A SQL snapshot for the same reason as
    snap_oltp__subscriptions: `updated_at` is cast once, text from SQLite and typed from
    Postgres alike. Prices stay in the source's minor units; readers convert them with the
    currencies seed (`minor_to_usd`), as stg_oltp__plan_prices does.
-#}
{% snapshot snap_oltp__plan_prices %}

    {{
        config(
            unique_key=['plan_id', 'currency'],
            strategy='timestamp',
            updated_at='updated_at',
        )
    }}

    select
        -- ids
        cast(plan_id as integer) as plan_id,
        upper(trim(currency)) as currency,
        -- price
        cast(monthly_price_minor as bigint) as monthly_price_minor,
        -- timestamps
        cast(updated_at as timestamp) as updated_at,
        -- lineage: the ingest run that first saw this price
        _batch_id,
        _loaded_at

    from {{ source('oltp', 'plan_prices') }}

{% endsnapshot %}
