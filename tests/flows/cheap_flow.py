"""A flow that costs nothing, for tests that deploy through prefect.yaml and run on a worker."""

from __future__ import annotations

from prefect import flow


@flow(name="cheap")
def tick(note: str = "ticked") -> str:
    """Return `note` (what the run did, for the test to read)."""
    return note
