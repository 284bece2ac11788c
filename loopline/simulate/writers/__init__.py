"""Turn simulated days into the files and tables a real company's systems would hold.

One module per source system:

- ``events``: viewing events, NDJSON, one file per arrival hour, under landing/events/date=.../
- ``payments``: the billing vendor's daily CSV export (its date format changes over time)
- ``tickets``: support tickets, free text, one NDJSON file a day
- ``catalogue``: the parquet files behind the vendor's HTTP API (``loopline.simulate.vendor_api``)
- ``oltp``: the OLTP database: users, plans, prices, subscriptions, updated in place

Every landing file is written once, atomically (temp file, then rename), and its lines
are sorted by a total order, so the same seed always gives the same bytes.
"""
