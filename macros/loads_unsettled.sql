{#-
    The lines an incremental, load-time model (one that appends the raw lines loaded since
    its last build, by `_loaded_at`) took in since its colour was last published.

    `record_unsettled_loads()` is such a model's pre-hook: it records in `load_builds`
    beside the model the load watermark the build starts from (the latest `_loaded_at` it
    already holds) and keeps the earliest watermark of every build since the last
    publication (`unsettled_after`; a full refresh or a first build records the
    '1900-01-01' sentinel: every line). Publication (loopline/publish.py) sets
    `unsettled_after` to null: publication vouched for every line so far.

    The model's data tests (and those of the views over it) read the lines loaded after
    that watermark only (`__unsettled_loads__(model)` in a test's `where`, filled by
    macros/tests_rebuilt_days.sql); a test of a key reads every row holding a key those lines
    carry, so a new line that repeats an old key still fails it. A build whose tests failed
    is not published, so the next build's tests read its lines again.
-#}

{#- the registry in `schema`, as SQL for a hook; `own`: a build that writes it makes it a
    table again where a build in place meets the view a publication left there -#}
{% macro create_load_builds(schema, own=false) -%}
    {%- if execute and own -%}
        {%- set kind = run_query(
            "select table_type from information_schema.tables where table_schema = '"
            ~ schema ~ "' and table_name = 'load_builds'"
        ) -%}
        {%- if kind.rows and kind.rows[0][0] == 'VIEW' -%}
            {%- do run_query('drop view "' ~ schema ~ '".load_builds') -%}
        {%- endif -%}
    {%- endif %}
    create schema if not exists {{ schema }};
    create table if not exists {{ schema }}.load_builds (
        relation_name varchar primary key,
        loaded_after timestamp not null,
        built_at timestamp not null,
        unsettled_after timestamp
    )
{%- endmacro %}

{#- pre-hook of an incremental model that appends lines by `loaded_at` -#}
{% macro record_unsettled_loads(loaded_at='_loaded_at') -%}
    {{ create_load_builds(this.schema, own=true) }};
    insert or replace into {{ this.schema }}.load_builds
        (relation_name, loaded_after, built_at, unsettled_after)
    select
        '{{ this.identifier }}',
        watermark.loaded_after,
        now()::timestamp,
        -- least() passes over a null: a settled record starts again from this build's lines
        least(
            watermark.loaded_after,
            (
                select unsettled_after from {{ this.schema }}.load_builds
                where relation_name = '{{ this.identifier }}'
            )
        )
    from (
        select
        {%- if is_incremental() %}
            coalesce(
                (select max({{ loaded_at }}) from {{ this }}), '1900-01-01'::timestamp
            ) as loaded_after
        {%- else %}
            '1900-01-01'::timestamp as loaded_after
        {%- endif %}
    ) as watermark
{%- endmacro %}
