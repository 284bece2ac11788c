-- Every clean viewing event belongs to exactly one viewing session: sessionisation
-- (incremental, rebuilt by day) must neither drop nor double-count events.
with

events as (

    select count(*) as events from {{ ref('stg_events__viewing_events') }}

),

sessions as (

    select coalesce(sum(events), 0) as events from {{ ref('int_viewing_events_sessionized') }}

)

select
    events.events as staged_events,
    sessions.events as sessionized_events
from events
cross join sessions
where events.events <> sessions.events
