{#-
    Recommendations beside what happened: one row per user per as-of day per recommender
    version. The outcome: which shows the user started (watched for the first time) in the
    7 days after the as-of day, how many of them were on the user's top-10 list, and how many
    were on the popularity baseline's list that day. The outcome is known once the data
    reaches 7 days past the as-of day.

    The popularity baseline: the shows most users started in the 7 days up to the as-of day,
    less the shows the user had already watched, top 10. Candidates are the 60 most started
    shows, so a user who had watched more than 50 of them gets a shorter list.
-#}

{% set k = 10 %}
{% set outcome_days = 7 %}

with

recommendations as (

    select * from {{ ref('stg_ml__recommendations') }}
    where recommendation_rank <= {{ k }}

),

events as (

    select * from {{ ref('stg_events__viewing_events') }}

),

first_watches as (

    select
        user_id,
        show_id,
        min(event_date) as first_watched_on
    from events
    group by user_id, show_id

),

data_bounds as (

    select max(event_date) as data_through
    from events

),

lists as (

    -- one row per list: the user, the day and the model version
    select distinct
        user_id,
        as_of_date,
        model_name,
        model_version
    from recommendations

),

list_days as (

    select distinct as_of_date
    from lists

),

list_users as (

    select distinct
        user_id,
        as_of_date
    from lists

),

started as (

    -- shows each user started in the days after the as-of day
    select
        lists.user_id,
        lists.as_of_date,
        first_watches.show_id
    from list_users as lists
    inner join first_watches
        on
            lists.user_id = first_watches.user_id
            and lists.as_of_date < first_watches.first_watched_on
            and lists.as_of_date + {{ outcome_days }} >= first_watches.first_watched_on

),

popular as (

    select
        list_days.as_of_date,
        first_watches.show_id,
        row_number() over (
            partition by list_days.as_of_date
            order by count(*) desc, first_watches.show_id
        ) as popularity_rank
    from list_days
    inner join first_watches
        on
            list_days.as_of_date - {{ outcome_days }} < first_watches.first_watched_on
            and list_days.as_of_date >= first_watches.first_watched_on
    group by list_days.as_of_date, first_watches.show_id
    qualify popularity_rank <= {{ k + 50 }}

),

popular_lists as (

    select
        users.user_id,
        users.as_of_date,
        popular.show_id
    from list_users as users
    inner join popular
        on users.as_of_date = popular.as_of_date
    left join first_watches as watched
        on
            users.user_id = watched.user_id
            and popular.show_id = watched.show_id
            and users.as_of_date >= watched.first_watched_on
    where watched.show_id is null
    qualify row_number() over (
        partition by users.user_id, users.as_of_date order by popular.popularity_rank
    ) <= {{ k }}

),

started_counts as (

    select
        user_id,
        as_of_date,
        count(*) as started_shows
    from started
    group by user_id, as_of_date

),

shown as (

    -- every list shown: the model's (per version) and the popularity baseline's
    select
        user_id,
        as_of_date,
        model_version,
        show_id
    from recommendations
    union all
    select
        user_id,
        as_of_date,
        null as model_version,
        show_id
    from popular_lists

),

hits as (

    select
        shown.user_id,
        shown.as_of_date,
        shown.model_version,
        count(started.show_id) as hits
    from shown
    inner join started
        on
            shown.user_id = started.user_id
            and shown.as_of_date = started.as_of_date
            and shown.show_id = started.show_id
    group by shown.user_id, shown.as_of_date, shown.model_version

),

joined as (

    select
        -- grain
        lists.model_name,
        lists.model_version,
        lists.user_id,
        lists.as_of_date,
        -- window
        {{ performance_window('lists.as_of_date') }},
        -- outcome
        lists.as_of_date + {{ outcome_days }} <= data_bounds.data_through as has_outcome,
        coalesce(started_counts.started_shows, 0)::bigint as started_shows,
        coalesce(model_hits.hits, 0)::bigint as recommended_started,
        coalesce(popularity_hits.hits, 0)::bigint as popular_started
    from lists
    cross join data_bounds
    left join started_counts
        on
            lists.user_id = started_counts.user_id
            and lists.as_of_date = started_counts.as_of_date
    left join hits as model_hits
        on
            lists.user_id = model_hits.user_id
            and lists.as_of_date = model_hits.as_of_date
            and lists.model_version = model_hits.model_version
    left join hits as popularity_hits
        on
            lists.user_id = popularity_hits.user_id
            and lists.as_of_date = popularity_hits.as_of_date
            and popularity_hits.model_version is null

),

final as (

    select
        *,
        -- recall@10 as training measures it (ml.recommend.recall_ndcg): hits / shows started
        case
            when has_outcome and started_shows > 0
                then recommended_started / started_shows
        end::double as recall_at_10,
        case
            when has_outcome and started_shows > 0
                then popular_started / started_shows
        end::double as popularity_recall_at_10
    from joined

)

select * from final
