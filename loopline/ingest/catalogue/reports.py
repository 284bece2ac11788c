"""What an extraction did (per entity, retries counted by cause), and how it stops."""

from __future__ import annotations

from dataclasses import dataclass, field


class ExtractError(RuntimeError):
    """The extraction stopped; the message names the URL, the status and how to resume."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        """Keep the URL and last HTTP status (None for a transport error) next to the message."""
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass
class EntityReport:
    """What one extraction did for one entity."""

    entity: str
    batch_id: str | None  # None when no page was written for the batch at all
    resumed: bool
    pages: int = 0  # page files written by this call
    items: int = 0  # items in those pages
    last_page: int = 0  # number of the batch's last page file so far
    completed: bool = False
    high_water: str | None = None
    retries_429: int = 0
    retries_5xx: int = 0
    retries_transport: int = 0

    @property
    def retries(self) -> int:
        """Every retried request, whatever the cause."""
        return self.retries_429 + self.retries_5xx + self.retries_transport


@dataclass
class ExtractReport:
    """What :func:`extract_catalogue` did, per entity."""

    entities: dict[str, EntityReport] = field(default_factory=dict)

    def __getitem__(self, entity: str) -> EntityReport:
        """The report for one entity."""
        return self.entities[entity]

    @property
    def pages(self) -> int:
        """Page files written, all entities."""
        return sum(r.pages for r in self.entities.values())

    @property
    def items(self) -> int:
        """Items written, all entities."""
        return sum(r.items for r in self.entities.values())

    @property
    def resumed(self) -> bool:
        """Whether any entity resumed an interrupted batch."""
        return any(r.resumed for r in self.entities.values())

    @property
    def retries_429(self) -> int:
        """Rate-limited requests retried, all entities."""
        return sum(r.retries_429 for r in self.entities.values())

    @property
    def retries_5xx(self) -> int:
        """Server errors (500/502/503/504) retried, all entities."""
        return sum(r.retries_5xx for r in self.entities.values())

    @property
    def retries_transport(self) -> int:
        """Timeouts, connection errors and unreadable 200s retried, all entities."""
        return sum(r.retries_transport for r in self.entities.values())


@dataclass(frozen=True)
class PageProgress:
    """Passed to the ``progress`` callback after each page file is written."""

    entity: str
    batch_id: str
    page: int
    items: int  # in this page
    total_items: int  # written by this call for the entity so far
    has_more: bool
