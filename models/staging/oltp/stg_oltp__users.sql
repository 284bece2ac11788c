-- the rows that passed every cleaning rule; the rules and the parsing are in base_oltp__users
-- (the rest is in quarantine_oltp__users)
-- the columns are the base model's, in its order, less the verdict
select * exclude (quarantine_reason, raw_record)  -- noqa: AM04
from {{ ref('base_oltp__users') }}
where quarantine_reason is null
