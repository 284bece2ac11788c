with

shows as (

    select
        item_id as show_id,
        {{ catalogue_show_cast('item') }} as cast_members,
        updated_at
    from {{ ref('base_catalogue__items') }}
    where entity = 'shows'

),

unnested as (

    -- unnest and generate_subscripts walk the list in step: member n gets position n;
    -- recursive unnest spreads each member's fields (name, role, character) into columns,
    -- so it has no single alias
    select
        show_id,
        updated_at,
        generate_subscripts(cast_members, 1) as cast_position,
        unnest(cast_members, recursive := true)  -- noqa: AL03
    from shows

),

renamed as (

    select
        -- ids
        show_id,
        cast_position,
        -- cast member
        name as cast_member_name,
        lower(trim(role)) as cast_role,
        character as character_name,
        lower(trim(role)) = 'director' as is_director,
        -- timestamps
        updated_at

    from unnested

)

select * from renamed
