{#-
    Churn scores as batch scoring wrote them (ml/score.py): one row per user per as-of day per
    model version. Empty, with the same columns, until scoring has run once.
-#}

with

source as (

    {{ source_or_empty('ml', 'churn_predictions') }}

),

renamed as (

    select
        -- ids
        user_id::bigint as user_id,
        model_name::varchar as model_name,
        model_version::varchar as model_version,
        feature_set_version::varchar as feature_set_version,
        -- dates
        as_of_date::date as as_of_date,
        scored_at::timestamp as scored_at,
        -- scores
        churn_probability::double as churn_probability,
        threshold::double as threshold,
        is_high_risk::boolean as is_high_risk
    from source

)

select * from renamed
