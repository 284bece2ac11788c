{#-
    Recommendations as batch scoring wrote them (ml/recs.py): one row per user per as-of day per
    recommender version per rank. Empty, with the same columns, until scoring has run once.
-#}

with

source as (

    {{ source_or_empty('ml', 'recommendations') }}

),

renamed as (

    select
        -- ids: user ids are numbers everywhere else in the warehouse
        user_id::bigint as user_id,
        show_id::varchar as show_id,
        model_name::varchar as model_name,
        model_version::varchar as model_version,
        -- dates
        as_of_date::date as as_of_date,
        scored_at::timestamp as scored_at,
        -- ranking
        rank::integer as recommendation_rank,
        score::double as score
    from source

)

select * from renamed
