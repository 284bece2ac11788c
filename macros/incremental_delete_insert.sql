{#-
    The delete step of the delete+insert incremental strategy, as a semi-join.

    dbt-duckdb 1.11 deletes with `delete from target using source where source.k1 =
    target.k1 and ...` when `unique_key` is a list. The feature sets' key is a partition,
    (as_of_date, feature_set_version), not a row key: every target row of a rebuilt day
    matches every new row of that day, so the join has rows-per-day squared rows (about
    3.4 billion for one week of fs_recs__co_watch at the demo scale), and an incremental
    build took several times as long as a full refresh (the same problem upstream:
    dbt-labs/dbt-adapters#150, dbt-labs/dbt-core#9279). Deleting the rows whose key is among
    the new rows' distinct keys (dbt-core's own default form) matches each target row once.
    Same rows deleted as before: a key with a null part matches nothing in either form.
-#}
{% macro duckdb__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) -%}

    {%- set dest_cols_csv = get_quoted_csv(dest_columns | map(attribute="name")) -%}

    {% if unique_key %}
        {%- set keys = [unique_key] if unique_key is string else unique_key -%}
        delete from {{ target }} as DBT_INCREMENTAL_TARGET
        where ({{ keys | join(', ') }}) in (
            select distinct {{ keys | join(', ') }}
            from {{ source }}
        )
        {%- for predicate in incremental_predicates or [] %}
            and {{ predicate }}
        {%- endfor %};
    {% endif %}

    insert into {{ target }} ({{ dest_cols_csv }})
    (
        select {{ dest_cols_csv }}
        from {{ source }}
    )

{%- endmacro %}
