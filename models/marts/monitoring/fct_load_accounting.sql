{#-
    Proves that no landed record was lost: for every source and ingest batch,
    landed (counted by the loader when it read the file) = loaded into staging
    + quarantined. A dbt test fails on any unaccounted record.
-#}

with

landed_files as (

    select
        source_name,
        _batch_id,
        sum(landed_records) as landed_records,
        count(*) filter (where is_rejected) as rejected_files
    from {{ ref('stg_loader__file_manifest') }}
    where source_name in ('events', 'payments', 'tickets')
    group by 1, 2

),

landed_users as (

    select
        'users' as source_name,
        _batch_id,
        landed_records,
        0 as rejected_files
    from {{ ref('stg_loader__oltp_loads') }}
    where table_name = 'users'

),

landed as (

    select * from landed_files
    union all
    select * from landed_users

),

staged as (

    select
        'events' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('stg_events__viewing_events') }}
    group by 1, 2
    union all
    select
        'payments' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('stg_billing__payments') }}
    group by 1, 2
    union all
    select
        'tickets' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('stg_support__tickets') }}
    group by 1, 2
    union all
    select
        'users' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('stg_oltp__users') }}
    group by 1, 2

),

quarantined as (

    select
        'events' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('quarantine_events__viewing_events') }}
    group by 1, 2
    union all
    select
        'payments' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('quarantine_billing__payments') }}
    group by 1, 2
    union all
    select
        'tickets' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('quarantine_support__tickets') }}
    group by 1, 2
    union all
    select
        'users' as source_name,
        _batch_id,
        count(*) as records
    from {{ ref('quarantine_oltp__users') }}
    group by 1, 2

),

accounted as (

    -- full outer joins: a staged batch the loader never counted is unaccounted too
    select
        -- grain
        coalesce(landed.source_name, staged.source_name, quarantined.source_name) as source_name,
        coalesce(landed._batch_id, staged._batch_id, quarantined._batch_id) as _batch_id,
        -- counts
        coalesce(landed.landed_records, 0)::bigint as landed_records,
        coalesce(staged.records, 0)::bigint as loaded_records,
        coalesce(quarantined.records, 0)::bigint as quarantined_records,
        (
            coalesce(landed.landed_records, 0)
            - coalesce(staged.records, 0)
            - coalesce(quarantined.records, 0)
        )::bigint as unaccounted_records,
        coalesce(landed.rejected_files, 0)::bigint as rejected_files

    from landed
    full outer join staged
        on
            landed.source_name = staged.source_name
            and landed._batch_id = staged._batch_id
    full outer join quarantined
        on
            coalesce(landed.source_name, staged.source_name) = quarantined.source_name
            and coalesce(landed._batch_id, staged._batch_id) = quarantined._batch_id

)

select * from accounted
