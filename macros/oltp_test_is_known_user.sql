{#-
    A relationships test to the users the source system knows: clean ones
    (stg_oltp__users) and quarantined ones (quarantine_oltp__users), i.e. every row of
    base_oltp__users. A plain relationships test to stg_oltp__users would fail on the
    subscriptions, payments and tickets of quarantined users, which are real (only the
    user's profile is defective).
-#}
{% test is_known_user(model, column_name) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
    and {{ column_name }} not in (
        select known_users.user_id from {{ ref('base_oltp__users') }} as known_users
    )

{% endtest %}
