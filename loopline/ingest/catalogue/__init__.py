"""Extract a catalogue API (``updated_since`` + page tokens) into immutable raw pages.

- ``extract``: the extraction, one batch per entity, resumable (`extract_catalogue`)
- ``client``: HTTP with retries (429 + ``Retry-After``, backoff on 5xx and transport errors)
- ``cursor``: the saved cursor per entity and the lock that keeps one extraction at a time
- ``durable``: files written whole or not at all
- ``reports``: what an extraction did, and the error it stops with
"""

from loopline.ingest.catalogue.extract import ENTITIES, extract_catalogue
from loopline.ingest.catalogue.reports import ExtractError, ExtractReport

__all__ = ["ENTITIES", "ExtractError", "ExtractReport", "extract_catalogue"]
