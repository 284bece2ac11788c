{#-
    Data tests of an incremental feature mart read the as-of days written since it was last
    published.

    A feature mart's build rewrites a few days (an incremental build) or all of them (a
    full refresh, or a new feature-set version); the days before were tested by the builds
    that wrote them, and publication (loopline/publish.py) vouches for them. So the tests
    under models/marts/features/ carry `where: "as_of_date >= __rebuilt_from__"`
    (dbt_project.yml), and this macro (dbt's `get_where_subquery`, which wraps the `model` of
    every generic test) replaces `__rebuilt_from__` with the first day written since the
    tested relation was last published, as `feature_batches_start` records it in
    `feature_builds` beside the mart (`unsettled_from`): a build whose tests failed is not
    published, so the next build's tests read its days again. A relation with no such day
    on record (a plain table, a build outside dbt, a published relation tested on its own)
    is tested in full; so is every build of a warehouse nobody publishes (plain `dbt build`).
    Every key these tests check includes as_of_date, so the rows of the days not read
    cannot break them.

    The event tables' tests do the same by load time: `__unsettled_loads__(model)` is the
    load watermark of the lines `model` took in since it was last published
    (macros/loads_unsettled.sql), and `__relation__` the tested relation, for a key's test
    that reads every row holding a key of those lines.
-#}
{% macro duckdb__get_where_subquery(relation) -%}
    {%- set where = config.get('where') or '' -%}
    {%- if '__rebuilt_from__' not in where and '__unsettled_loads__' not in where -%}
        {%- do return(dbt.default__get_where_subquery(relation)) -%}
    {%- endif -%}
    {%- set builds = api.Relation.create(
        database=relation.database, schema=relation.schema, identifier='feature_builds'
    ) -%}
    {%- set rebuilt_from -%}
        coalesce(
            (select max(unsettled_from) from {{ builds }} where relation_name = '{{ relation.identifier }}'),
            '1900-01-01'::date
        )
    {%- endset -%}
    {%- set where = where | replace('__rebuilt_from__', rebuilt_from) -%}
    {#- __unsettled_loads__(model): the load watermark of `model`'s lines not yet published
        (macros/loads_unsettled.sql, `load_builds` beside the model, wherever the tested view
        is), '1900-01-01' (every line) when none is on record; __relation__: the tested
        relation, for a key's test that reads the rows holding the keys of those lines -#}
    {%- set filled = namespace(where=where) -%}
    {%- for name in modules.re.findall('__unsettled_loads__\\((\\w+)\\)', where) | unique -%}
        {%- set models = graph.nodes.values() | selectattr('resource_type', 'equalto', 'model')
            | selectattr('name', 'equalto', name) | list -%}
        {%- if not models -%}
            {{ exceptions.raise_compiler_error("__unsettled_loads__(" ~ name ~ "): no such model") }}
        {%- endif -%}
        {%- set loads = api.Relation.create(
            database=relation.database, schema=models[0].schema, identifier='load_builds'
        ) -%}
        {%- set watermark -%}
            coalesce((select max(unsettled_after) from {{ loads }} where relation_name = '{{ name }}'), '1900-01-01'::timestamp)
        {%- endset -%}
        {%- set filled.where = filled.where | replace('__unsettled_loads__(' ~ name ~ ')', watermark) -%}
    {%- endfor -%}
    {%- set where = filled.where | replace('__relation__', relation | string) -%}
    {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
{%- endmacro %}
