-- Nobody watches before their account exists: a session that starts before the user's
-- signup means a wrong user match or a time-zone error in staging.
select
    sessions.viewing_session_id,
    sessions.user_id,
    sessions.started_at,
    users.signup_at
from {{ ref('fct_viewing_sessions') }} as sessions
inner join {{ ref('dim_users') }} as users
    on sessions.user_id = users.user_id
where sessions.started_at < users.signup_at
