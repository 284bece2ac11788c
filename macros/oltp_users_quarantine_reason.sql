{#-
    The first cleaning rule a raw OLTP user row fails, or null for a clean row. Shared by
    stg_oltp__users and quarantine_oltp__users so that every row lands in exactly one of
    them. Rules are checked in a fixed order, so a row carries one reason.
-#}
{% macro oltp_users_quarantine_reason() %}
    case
        when cast(birth_date as date) > cast(signup_at as date) then 'future_birth_date'
        when nullif(trim(country), '') is null then 'null_country'
    end
{% endmacro %}
