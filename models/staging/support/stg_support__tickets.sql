-- the rows that passed every cleaning rule; the rules and the parsing are in base_support__tickets
-- (the rest is in quarantine_support__tickets)
-- the columns are the base model's, in its order, less the verdict
select * exclude (quarantine_reason, raw_record)  -- noqa: AM04
from {{ ref('base_support__tickets') }}
where quarantine_reason is null
