{#-
    Proves that no landed record was lost: for every source and ingest batch,
    landed (counted by the loader when it read the file or copied the table) = loaded into
    staging + quarantined. A dbt test fails on any unaccounted record.

    One entry per source: where the loader counted what landed (a file source's name in the
    file manifest, or an OLTP table), and the staging and quarantine models that split it.
-#}

{%- set sources = [
    {'name': 'events', 'landed_as': 'files',
     'staged': 'stg_events__viewing_events', 'quarantined': 'quarantine_events__viewing_events'},
    {'name': 'payments', 'landed_as': 'files',
     'staged': 'stg_billing__payments', 'quarantined': 'quarantine_billing__payments'},
    {'name': 'tickets', 'landed_as': 'files',
     'staged': 'stg_support__tickets', 'quarantined': 'quarantine_support__tickets'},
    {'name': 'users', 'landed_as': 'oltp_table',
     'staged': 'stg_oltp__users', 'quarantined': 'quarantine_oltp__users'},
] -%}

with

landed as (

    {% for source in sources %}
        {%- if source.landed_as == 'files' %}
            select
                source_name,
                _batch_id,
                sum(landed_records) as landed_records,
                count(*) filter (where is_rejected) as rejected_files
            from {{ ref('stg_loader__file_manifest') }}
            where source_name = '{{ source.name }}'
            group by source_name, _batch_id
        {%- else %}
            select
                '{{ source.name }}' as source_name,
                _batch_id,
                landed_records,
                0 as rejected_files
            from {{ ref('stg_loader__oltp_loads') }}
            where table_name = '{{ source.name }}'
        {%- endif %}
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

split as (

    {% for source in sources %}
        select
            '{{ source.name }}' as source_name,
            _batch_id,
            count(*) as loaded_records,
            0 as quarantined_records
        from {{ ref(source.staged) }}
        group by _batch_id
        union all
        select
            '{{ source.name }}' as source_name,
            _batch_id,
            0 as loaded_records,
            count(*) as quarantined_records
        from {{ ref(source.quarantined) }}
        group by _batch_id
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

split_by_batch as (

    select
        source_name,
        _batch_id,
        sum(loaded_records) as loaded_records,
        sum(quarantined_records) as quarantined_records
    from split
    group by source_name, _batch_id

),

accounted as (

    -- a full outer join: a staged batch the loader never counted is unaccounted too
    select
        -- grain
        coalesce(landed.source_name, split_by_batch.source_name) as source_name,
        coalesce(landed._batch_id, split_by_batch._batch_id) as _batch_id,
        -- counts
        coalesce(landed.landed_records, 0)::bigint as landed_records,
        coalesce(split_by_batch.loaded_records, 0)::bigint as loaded_records,
        coalesce(split_by_batch.quarantined_records, 0)::bigint as quarantined_records,
        (
            coalesce(landed.landed_records, 0)
            - coalesce(split_by_batch.loaded_records, 0)
            - coalesce(split_by_batch.quarantined_records, 0)
        )::bigint as unaccounted_records,
        coalesce(landed.rejected_files, 0)::bigint as rejected_files

    from landed
    full outer join split_by_batch
        on
            landed.source_name = split_by_batch.source_name
            and landed._batch_id = split_by_batch._batch_id

)

select * from accounted
