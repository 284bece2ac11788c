{#-
    Churn scores as batch scoring wrote them (ml/score.py): one row per user per as-of day per
    model version. Until scoring has run once the source table does not exist, and this view
    is empty with the same columns.
-#}

with

source as (

    {% if relation_exists('ml', 'churn_predictions') %}
        select * from {{ source('ml', 'churn_predictions') }}
    {% else %}
        select
            null as user_id,
            null as as_of_date,
            null as churn_probability,
            null as is_high_risk,
            null as threshold,
            null as model_name,
            null as model_version,
            null as feature_set_version,
            null as scored_at
        where false
    {% endif %}

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
