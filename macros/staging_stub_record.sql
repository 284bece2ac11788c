{#-
    The raw record of a stub row: the loader keeps the position (file, line) and size of a
    record it did not load (`_stub_reason`, e.g. oversized_record over
    LOOPLINE_MAX_RECORD_BYTES), never its payload. Null for an ordinary row.
-#}
{% macro stub_record(reason, record_bytes) -%}
    case
        when {{ reason }} is not null
            then json_object('stub', {{ reason }}, 'record_bytes', {{ record_bytes }})::varchar
    end
{%- endmacro %}
