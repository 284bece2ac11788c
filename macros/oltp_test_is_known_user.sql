{#-
    A relationships test to the users the source system knows: clean ones
    (stg_oltp__users) and quarantined ones (quarantine_oltp__users). A plain relationships
    test to stg_oltp__users would fail on the subscriptions, payments and tickets of
    quarantined users, which are real (only the user's profile is defective), and dbt
    does not render ref() inside a test's `where` config to exclude them.
-#}
{% test is_known_user(model, column_name) %}

with

known_users as (

    select user_id from {{ ref('stg_oltp__users') }}
    union
    select user_id from {{ ref('quarantine_oltp__users') }}

)

select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
    and {{ column_name }} not in (select user_id from known_users)

{% endtest %}
