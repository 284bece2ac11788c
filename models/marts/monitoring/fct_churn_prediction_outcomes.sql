{#-
    Churn predictions beside what happened: one row per user per as-of day per model version.
    The outcome is the churn label the model was trained on (label_churn__user_daily, not
    restated here): it exists once the user's whole label window has been observed, so
    `has_outcome` turns true about a month after the prediction. Windows are ISO weeks of
    the as-of day (macro performance_window), the unit the performance rules are judged per.
-#}

with

predictions as (

    select * from {{ ref('stg_ml__churn_predictions') }}

),

labels as (

    select * from {{ ref('label_churn__user_daily') }}

),

joined as (

    select
        -- grain
        predictions.model_name,
        predictions.model_version,
        predictions.user_id,
        predictions.as_of_date,
        -- window
        {{ performance_window('predictions.as_of_date') }},
        -- prediction
        predictions.feature_set_version,
        predictions.churn_probability,
        predictions.threshold,
        predictions.is_high_risk,
        predictions.scored_at,
        -- outcome
        labels.as_of_date is not null as has_outcome,
        labels.churned_within_30d as is_churned,
        labels.label_window_end as outcome_known_at
    from predictions
    left join labels
        on
            predictions.user_id = labels.user_id
            and predictions.as_of_date = labels.as_of_date

)

select * from joined
