-- the rows that passed every cleaning rule; the rules and the parsing are in base_events__viewing_events
-- (the rest is in quarantine_events__viewing_events)
-- the columns are the base model's, in its order, less the verdict
select * exclude (occurred_at_raw, quarantine_reason, raw_record)  -- noqa: AM04
from {{ ref('base_events__viewing_events') }}
where quarantine_reason is null
