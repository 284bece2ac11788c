{#-
    The category of a support ticket, from keywords in its free text.

    Rules are tried in order and the first match wins. The order resolves the overlaps
    seen in real tickets: someone cancelling often mentions their account ("close my
    account") or the price, a playback complaint often names a show or an episode, so
    cancellation comes first, then billing, playback, content, and account last (the word
    "account" appears in many tickets about something else). Keywords match at the start
    of a word, so a stem ("crash", "freez") covers its forms and "card" does not match
    "discard". Text that matches nothing is 'other'.
-#}
{% macro support_ticket_category(text) %}
    {%- set rules = [
        ('cancellation', [
            'cancel', 'unsubscribe', 'close my account', 'stop the subscription',
            'stop my subscription', 'end my subscription', 'too expensive',
            'thinking of leaving',
        ]),
        ('billing', [
            'charge', 'refund', 'invoice', 'billing', 'billed', 'payment', 'declined',
            'statement', 'card', 'receipt',
        ]),
        ('playback', [
            'buffer', 'crash', 'playback', 'press play', 'no sound', 'audio', 'freez',
            'error code', 'streaming', 'stutter', 'lag',
        ]),
        ('content', [
            'season', 'subtitle', 'catalogue', 'catalog', 'titles', 'leaving the service',
            'halfway', 'episode', 'genre',
        ]),
        ('account', [
            'log in', 'login', 'sign in', 'password', 'email address', 'account',
            'profile',
        ]),
    ] -%}
    case
        {%- for category, keywords in rules %}
        when regexp_matches(lower({{ text }}), '\b({{ keywords | join("|") }})')
            then '{{ category }}'
        {%- endfor %}
        else 'other'
    end
{%- endmacro %}
