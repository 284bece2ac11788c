{#-
    Feature-set versioning. A feature set's version is a hash of its definition (the
    model's SQL and its feature window variables), so any change to columns or logic
    gives a new version; rows of older versions stay in the table, readable by version.
-#}

{% macro feature_set_version() -%}
    {{- local_md5(model.raw_code ~ var('events_lookback_days') | string)[:12] -}}
{%- endmacro %}

{#- on-run-start: the registry exists before any feature model runs (two models' hooks
    creating it at once would conflict in DuckDB) -#}
{% macro create_feature_set_registry() %}
    {%- set schema = generate_schema_name('features', none) %}
    create schema if not exists {{ schema }};
    create table if not exists {{ schema }}.feature_sets (
        feature_set_name varchar not null,
        feature_set_version varchar not null,
        definition_hash varchar not null,
        relation_name varchar not null,
        columns_json varchar not null,
        created_at timestamp not null,
        primary key (feature_set_name, feature_set_version)
    );
    -- the as-of days each feature mart's last build wrote (feature_batches_start), and the
    -- first day written since the relation was last published (unsettled_from: null once
    -- publication vouched for every day): the mart's data tests read from there on
    -- (macros/tests_rebuilt_days.sql), so days a build wrote whose tests failed are read
    -- again by the next build's tests, however few days that build rewrites
    create table if not exists {{ schema }}.feature_builds (
        relation_name varchar primary key,
        feature_set_version varchar not null,
        rebuilt_from date,
        rebuilt_through date,
        built_at timestamp not null,
        unsettled_from date
    )
    {#- a table from before the column gets it; a published view (the plain schema of a
        build in place, after a publication) is left alone -#}
    {%- if execute %}
        {%- set kind = run_query(
            "select table_type from information_schema.tables where table_schema = '"
            ~ schema ~ "' and table_name = 'feature_builds'"
        ) -%}
        {%- if kind.rows and kind.rows[0][0] == 'BASE TABLE' %};
    alter table {{ schema }}.feature_builds add column if not exists unsettled_from date
        {%- endif -%}
    {%- endif %}
{% endmacro %}

{#- post-hook: record (name, version, definition hash, columns with types) once per version.
    The columns are the model's own output (DuckDB describes the compiled query without
    running it), not the table's: the table keeps every column any version ever had
    (`append_new_columns`), so a column a new version dropped must not be listed for it. -#}
{% macro register_feature_set(feature_set_name) %}
    {%- set columns = [] -%}
    {%- for column in adapter.get_column_schema_from_query(model.compiled_code) -%}
        {%- do columns.append({'name': column.name, 'type': column.dtype}) -%}
    {%- endfor %}
    insert into {{ this.schema }}.feature_sets
    select
        '{{ feature_set_name }}',
        '{{ feature_set_version() }}',
        '{{ local_md5(model.raw_code) }}',
        '{{ this }}',
        '{{ tojson(columns) }}',
        now()::timestamp
    where not exists (
        select 1 from {{ this.schema }}.feature_sets
        where feature_set_name = '{{ feature_set_name }}'
            and feature_set_version = '{{ feature_set_version() }}'
    )
{% endmacro %}

{#-
    The first as-of day an incremental feature build recomputes: this version's latest
    day minus `lookback_days` (late data changes recent days); every day for a version
    with no rows yet, or on a full refresh. Used as the body of a `build_from` CTE.
-#}
{% macro feature_rebuild_from(lookback_days) -%}
    {% if is_incremental() %}
        select
            coalesce(
                max(this_model.as_of_date) - to_days({{ lookback_days }}),
                '1900-01-01'::date
            ) as first_day
        from {{ this }} as this_model
        where this_model.feature_set_version = '{{ feature_set_version() }}'
    {% else %}
        select '1900-01-01'::date as first_day
    {% endif %}
{%- endmacro %}
