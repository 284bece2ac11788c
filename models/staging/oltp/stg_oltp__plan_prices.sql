with

plan_prices as (

    select * from {{ source('oltp', 'plan_prices') }}

),

currencies as (

    select * from {{ ref('currencies') }}

),

renamed as (

    select
        -- ids
        cast(plan_prices.plan_id as integer) as plan_id,
        upper(trim(plan_prices.currency)) as currency,
        -- price: the source keeps minor units; major units and USD use the currency seed
        -- (a currency missing from the seed leaves them null, which the tests catch)
        cast(plan_prices.monthly_price_minor as bigint) as monthly_price_minor,
        {{ minor_to_major('plan_prices.monthly_price_minor', 'currencies.minor_exponent') }}
            as monthly_price,
        {{ minor_to_usd(
            'plan_prices.monthly_price_minor', 'currencies.minor_exponent', 'currencies.usd_per_unit'
        ) }} as monthly_price_usd,
        -- timestamps
        cast(plan_prices.updated_at as timestamp) as updated_at,
        -- lineage
        plan_prices._batch_id,
        plan_prices._loaded_at

    from plan_prices
    left join currencies
        on upper(trim(plan_prices.currency)) = currencies.currency

)

select * from renamed
