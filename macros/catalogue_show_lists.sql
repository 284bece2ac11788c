{#-
    The lists nested in a show item of the catalogue API, parsed from its JSON. Shared by
    stg_catalogue__shows and the models that unnest them one row per member.
-#}

{#- Genres, lower-cased and trimmed; the vendor lists the primary genre first. -#}
{% macro catalogue_show_genres(item) -%}
    list_transform(from_json({{ item }} -> '$.genres', '["varchar"]'), genre -> lower(trim(genre)))
{%- endmacro %}

{#- Cast members as a list of structs (name, role, character). -#}
{% macro catalogue_show_cast(item) -%}
    from_json(
        {{ item }} -> '$.cast', '[{"name": "varchar", "role": "varchar", "character": "varchar"}]'
    )
{%- endmacro %}
