{#- Fails on every row where the column is not exactly zero (nulls count as failures). -#}
{% test is_zero(model, column_name) %}
    select *
    from {{ model }}
    where coalesce({{ column_name }}, -1) <> 0
{% endtest %}
