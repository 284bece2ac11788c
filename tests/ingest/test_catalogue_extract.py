"""The catalogue extractor against the simulated vendor API, over real HTTP."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

import loopline.ingest.catalogue.extract as extract
from loopline.ingest.catalogue.client import BACKOFF_CAP_S
from loopline.ingest.catalogue.cursor import exclusive, load_cursor, state_path
from loopline.ingest.catalogue.extract import batch_dir, catalogue_landing_dir, extract_catalogue
from loopline.ingest.catalogue.reports import ExtractError, ExtractReport, PageProgress
from loopline.settings import Settings
from loopline.simulate import simulate
from loopline.simulate.run import catalogue_dir
from loopline.simulate.vendor_api import ApiBehaviour, CatalogueServer
from tests.conftest import SMALL_UNTIL, run_small

CALM = ApiBehaviour(rate_limit_per_s=1e6, burst=1_000_000, failure_rate=0.0)
ID_COLUMN = {"shows": "show_id", "episodes": "episode_id"}
DOC_KEYS = {"entity", "batch_id", "page", "extracted_at", "request", "status", "body"}
BODY_KEYS = {"data", "next_page_token", "has_more", "server_time"}


def no_sleep(_: float) -> None:
    """Never wait."""


class RecordingSleep:
    """Records every requested wait and naps briefly so the rate limiter can refill."""

    def __init__(self, nap: float = 0.01) -> None:
        """Start with no calls."""
        self.calls: list[float] = []
        self.nap = nap

    def __call__(self, seconds: float) -> None:
        """Record, then nap for at most ``nap`` seconds."""
        self.calls.append(seconds)
        time.sleep(min(seconds, self.nap))


class SimulatedCrashError(Exception):
    """Stands in for the process dying."""


class CrashingClient(httpx.Client):
    """A real client that 'crashes' before its request once ``crash_after`` pages succeeded."""

    def __init__(self, crash_after: int) -> None:
        """Count successful pages from zero."""
        super().__init__(timeout=10)
        self.crash_after = crash_after
        self.ok = 0

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        """Send, unless it is time to crash."""
        if self.ok >= self.crash_after:
            raise SimulatedCrashError(f"crashed after {self.ok} pages")
        response = super().send(request, **kwargs)
        if response.status_code == 200:
            self.ok += 1
        return response


class FlakyTransport(httpx.BaseTransport):
    """Real HTTP, except that after ``after`` requests the next ``failures`` ones fail."""

    def __init__(self, after: int, failures: int, kind: str) -> None:
        """``kind``: an HTTP status such as "503", or "connect" for a connection error."""
        self.inner = httpx.HTTPTransport()
        self.after = after
        self.failures = failures
        self.kind = kind
        self.seen = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Fail or pass the request through."""
        self.seen += 1
        if self.after < self.seen and self.failures > 0:
            self.failures -= 1
            if self.kind == "connect":
                raise httpx.ConnectError("connection refused (injected)", request=request)
            return httpx.Response(
                int(self.kind), json={"error": "injected", "message": "flaky (injected)"}
            )
        return self.inner.handle_request(request)

    def close(self) -> None:
        """Close the real transport."""
        self.inner.close()


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One small simulated company whose catalogue the vendor API serves (read-only)."""
    settings, _ = run_small(tmp_path_factory.mktemp("catalogue_source"))
    return settings


@pytest.fixture(scope="module")
def calm_server(source: Settings) -> Iterator[CatalogueServer]:
    """The API over the shared catalogue, with no rate limit and no failures."""
    with CatalogueServer(catalogue_dir(source), CALM) as server:
        yield server


@pytest.fixture
def sink(tmp_path: Path) -> Settings:
    """Fresh landing and state folders for one test."""
    return Settings(data_dir=tmp_path / "sink")


def catalogue_rows(settings: Settings, entity: str) -> dict[str, datetime]:
    """``id -> updated_at`` of the catalogue parquet the API serves."""
    table = pq.read_table(catalogue_dir(settings) / f"{entity}.parquet")
    ids = table.column(ID_COLUMN[entity]).to_pylist()
    stamps = table.column("updated_at").to_pylist()
    return dict(zip(ids, stamps, strict=True))


def batches(settings: Settings, entity: str) -> list[str]:
    """Batch ids with a folder in the landing area, oldest first."""
    root = catalogue_landing_dir(settings) / entity
    if not root.is_dir():
        return []
    return sorted(p.name.removeprefix("batch=") for p in root.iterdir())


def read_batch(settings: Settings, entity: str, batch_id: str) -> list[dict[str, Any]]:
    """A batch's page documents in page order, checking names, numbering and leftovers."""
    folder = batch_dir(settings, entity, batch_id)
    names = sorted(p.name for p in folder.iterdir())
    expected = [f"page_{n:05d}.json" for n in range(1, len(names) + 1)]
    assert names == expected, f"page files have gaps or leftovers: {names}"
    docs = [json.loads((folder / name).read_text(encoding="utf-8")) for name in names]
    for number, doc in enumerate(docs, start=1):
        assert set(doc) == DOC_KEYS
        assert (doc["entity"], doc["batch_id"], doc["page"], doc["status"]) == (
            entity,
            batch_id,
            number,
            200,
        )
        assert set(doc["body"]) == BODY_KEYS
        assert doc["extracted_at"].endswith("Z")
        datetime.fromisoformat(doc["extracted_at"].replace("Z", "+00:00"))
        assert doc["request"]["url"].endswith(f"/v1/{entity}")
    assert docs[-1]["body"]["next_page_token"] is None
    assert all(d["body"]["next_page_token"] for d in docs[:-1])
    return docs


def items_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item of every page, in order."""
    return [item for doc in docs for item in doc["body"]["data"]]


def ids_of(items: list[dict[str, Any]], entity: str) -> list[str]:
    """The ids of items."""
    return [item[ID_COLUMN[entity]] for item in items]


def iso_z(value: datetime) -> str:
    """The API's timestamp format."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def landing_snapshot(settings: Settings) -> dict[str, int]:
    """Every landing file with its modification time."""
    root = catalogue_landing_dir(settings)
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# -- 1. a full extraction -----------------------------------------------------------------------


def test_full_extraction_lands_the_whole_catalogue_once(
    source: Settings, calm_server: CatalogueServer, sink: Settings
) -> None:
    seen: list[PageProgress] = []
    report = extract_catalogue(
        sink, calm_server.url, page_size=50, sleep=no_sleep, progress=seen.append
    )

    assert not report.resumed and report.retries_429 == report.retries_5xx == 0
    for entity in ("shows", "episodes"):
        rows = catalogue_rows(source, entity)
        entity_report = report[entity]
        assert entity_report.completed
        assert batches(sink, entity) == [entity_report.batch_id]
        docs = read_batch(sink, entity, str(entity_report.batch_id))
        ids = ids_of(items_of(docs), entity)
        assert len(ids) == len(set(ids)), "an id came twice"
        assert set(ids) == set(rows)
        assert entity_report.items == len(rows)
        assert entity_report.pages == len(docs) == -(-len(rows) // 50)
        assert "updated_since" not in docs[0]["request"]["params"]  # a first run takes everything
        assert docs[0]["request"]["params"] == {"page_size": 50}
        assert docs[1]["request"]["params"] == {
            "page_size": 50,
            "page_token": docs[0]["body"]["next_page_token"],
        }
        assert entity_report.high_water == iso_z(max(rows.values()))
        pages_seen = [p.page for p in seen if p.entity == entity]
        assert pages_seen == list(range(1, len(docs) + 1))

    # the body is the response as the API gives it
    direct = httpx.get(f"{calm_server.url}/v1/shows", params={"page_size": 50}).json()
    first = read_batch(sink, "shows", str(report["shows"].batch_id))[0]["body"]
    assert first["data"] == direct["data"]
    assert first["next_page_token"] == direct["next_page_token"]

    state = json.loads(state_path(sink).read_text())
    assert set(state) == {"shows", "episodes"}
    for entity, cursor in state.items():
        assert cursor["high_water"] == report[entity].high_water
        assert cursor["last_batch_id"] == report[entity].batch_id
        for name in ("batch_id", "next_page", "page_token", "batch_max_updated_at"):
            assert cursor[name] is None


def test_unknown_entity_is_refused(sink: Settings, calm_server: CatalogueServer) -> None:
    with pytest.raises(ValueError, match="movies"):
        extract_catalogue(sink, calm_server.url, entities=("movies",), sleep=no_sleep)


def test_an_extraction_inside_one_that_holds_the_cursor_goes_ahead(
    sink: Settings, calm_server: CatalogueServer
) -> None:
    """The cursor lock is re-entrant in a process (another process queues: tests/ingest/test_run)."""
    with exclusive(sink):
        assert extract_catalogue(sink, calm_server.url, sleep=no_sleep).pages > 0


# -- 2. rate limits and injected failures -------------------------------------------------------


def test_survives_rate_limits_and_injected_failures(
    source: Settings, calm_server: CatalogueServer, sink: Settings, tmp_path: Path
) -> None:
    calm = extract_catalogue(Settings(data_dir=tmp_path / "calm"), calm_server.url, sleep=no_sleep)
    calm_settings = Settings(data_dir=tmp_path / "calm")
    responses: list[tuple[int, str | None]] = []

    def record(response: httpx.Response) -> None:
        """Remember each status and its Retry-After."""
        responses.append((response.status_code, response.headers.get("Retry-After")))

    sleep = RecordingSleep()
    rough = ApiBehaviour(rate_limit_per_s=5, burst=3, failure_rate=0.3, seed=11)
    with (
        CatalogueServer(catalogue_dir(source), rough) as server,
        httpx.Client(timeout=10, event_hooks={"response": [record]}) as client,
    ):
        report = extract_catalogue(sink, server.url, page_size=200, client=client, sleep=sleep)

    assert report.retries_429 > 0
    assert report.retries_5xx > 0
    assert report.retries_429 == sum(1 for status, _ in responses if status == 429)
    assert report.retries_5xx == sum(1 for status, _ in responses if status >= 500)
    # one wait per failed response, in order: 429 waits exactly Retry-After, 5xx back off
    failed = [(status, after) for status, after in responses if status != 200]
    assert len(sleep.calls) == len(failed)
    for (status, after), waited in zip(failed, sleep.calls, strict=True):
        if status == 429:
            assert after is not None and waited == float(after)
        else:
            assert 0 < waited <= BACKOFF_CAP_S
            if after is not None:
                assert waited >= float(after)
    for entity in ("shows", "episodes"):
        assert report[entity].completed
        got = items_of(read_batch(sink, entity, str(report[entity].batch_id)))
        want = items_of(read_batch(calm_settings, entity, str(calm[entity].batch_id)))
        key = ID_COLUMN[entity]
        assert sorted(got, key=lambda i: i[key]) == sorted(want, key=lambda i: i[key])
        assert len(ids_of(got, entity)) == len(set(ids_of(got, entity)))


def test_backoff_doubles_with_jitter_up_to_the_cap(
    calm_server: CatalogueServer, sink: Settings
) -> None:
    sleep = RecordingSleep(nap=0)
    transport = FlakyTransport(after=0, failures=9, kind="500")
    with httpx.Client(transport=transport) as client:
        report = extract_catalogue(
            sink, calm_server.url, ("shows",), client=client, sleep=sleep, max_attempts=10
        )
    assert report["shows"].completed and report.retries_5xx == 9
    for attempt, waited in enumerate(sleep.calls, start=1):
        ceiling = min(BACKOFF_CAP_S, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= waited <= ceiling, (attempt, waited)
    assert sleep.calls[-1] > 10  # the cap is reached, not stepped over


# -- 3. a crash in the middle, then a restart ----------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """How and where the first run dies."""

    name: str
    pages_before: int  # pages whose state was saved before the crash
    rewritten: bool  # the last page file was written but its state not saved


CRASHES = [
    Crash("before-request-4", 3, rewritten=False),
    Crash("before-first-request", 0, rewritten=False),
    Crash("after-page-3-written-before-state-saved", 2, rewritten=True),
]


@pytest.mark.parametrize("crash", CRASHES, ids=lambda c: c.name)
def test_restart_resumes_the_batch_without_gaps_or_duplicates(
    crash: Crash,
    source: Settings,
    calm_server: CatalogueServer,
    sink: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = catalogue_rows(source, "shows")
    total_pages = -(-len(rows) // 20)
    assert total_pages > 4

    if crash.rewritten:
        real_save = extract.save_cursor
        saves = {"n": 0}

        def save_then_die(settings: Settings, state: dict[str, dict[str, Any]]) -> None:
            """Die instead of the 4th save: the one after page 3 was written."""
            saves["n"] += 1
            if saves["n"] == 4:
                raise SimulatedCrashError("killed before saving the cursor")
            real_save(settings, state)

        monkeypatch.setattr(extract, "save_cursor", save_then_die)
        client = httpx.Client(timeout=10)
    else:
        client = CrashingClient(crash_after=crash.pages_before)
    with client, pytest.raises(SimulatedCrashError):
        extract_catalogue(sink, calm_server.url, ("shows",), page_size=20, client=client)
    monkeypatch.undo()

    cursor = load_cursor(sink)["shows"]
    (batch_id,) = batches(sink, "shows") or [cursor["batch_id"]]
    assert cursor["batch_id"] == batch_id
    assert cursor["next_page"] == crash.pages_before + 1
    assert cursor["high_water"] is None
    written = crash.pages_before + (1 if crash.rewritten else 0)
    folder = batch_dir(sink, "shows", batch_id)
    assert len(list(folder.glob("page_*.json")) if folder.exists() else []) == written

    report = extract_catalogue(sink, calm_server.url, ("shows",), page_size=20, sleep=no_sleep)

    shows = report["shows"]
    assert report.resumed and shows.resumed and shows.completed
    assert shows.batch_id == batch_id
    assert batches(sink, "shows") == [batch_id]
    assert shows.pages == total_pages - crash.pages_before
    assert shows.last_page == total_pages
    ids = ids_of(items_of(read_batch(sink, "shows", batch_id)), "shows")
    assert len(ids) == len(set(ids)) == len(rows)
    assert set(ids) == set(rows)
    cursor = load_cursor(sink)["shows"]
    assert cursor["batch_id"] is None and cursor["high_water"] == iso_z(max(rows.values()))


# -- 4. incremental runs -------------------------------------------------------------------------


@dataclass
class IncrementalRun:
    """Three extractions around a simulation that continued for ten days."""

    settings: Settings
    first: ExtractReport
    second: ExtractReport
    third: ExtractReport
    rows_before: dict[str, dict[str, datetime]]
    rows_after: dict[str, dict[str, datetime]]
    shows_before: dict[str, dict[str, Any]]
    shows_after: dict[str, dict[str, Any]]
    landing_before_third: dict[str, int]
    cursor_before_third: dict[str, dict[str, Any]]


def _shows_table(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every show row by id."""
    table = pq.read_table(catalogue_dir(settings) / "shows.parquet")
    return {row["show_id"]: row for row in table.to_pylist()}


@pytest.fixture(scope="module")
def incremental(
    source: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IncrementalRun]:
    """A copy of the company: extract, simulate ten more days, extract twice more."""
    data_dir = tmp_path_factory.mktemp("incremental") / "data"
    shutil.copytree(source.data_dir, data_dir)
    settings = Settings(data_dir=data_dir)
    with CatalogueServer(catalogue_dir(settings), CALM) as server:
        first = extract_catalogue(settings, server.url, sleep=no_sleep)
        rows_before = {e: catalogue_rows(settings, e) for e in ("shows", "episodes")}
        shows_before = _shows_table(settings)
        simulate(settings, SMALL_UNTIL + timedelta(days=10), progress=False)
        second = extract_catalogue(settings, server.url, sleep=no_sleep)
        rows_after = {e: catalogue_rows(settings, e) for e in ("shows", "episodes")}
        landing = landing_snapshot(settings)
        cursor = load_cursor(settings)
        third = extract_catalogue(settings, server.url, sleep=no_sleep)
    yield IncrementalRun(
        settings,
        first,
        second,
        third,
        rows_before,
        rows_after,
        shows_before,
        _shows_table(settings),
        landing,
        cursor,
    )


@pytest.mark.parametrize("entity", ["shows", "episodes"])
def test_incremental_run_fetches_only_what_changed_after_the_high_water(
    incremental: IncrementalRun, entity: str
) -> None:
    run = incremental
    old_high_water = run.first[entity].high_water
    assert old_high_water is not None
    assert run.rows_after[entity] != run.rows_before[entity], "the simulation changed nothing"
    cut = datetime.fromisoformat(old_high_water.replace("Z", "+00:00"))
    expected = {i for i, at in run.rows_after[entity].items() if at > cut}
    assert expected, "nothing newer than the high-water mark to fetch"

    report = run.second[entity]
    assert report.batch_id != run.first[entity].batch_id
    assert batches(run.settings, entity) == sorted(
        [str(run.first[entity].batch_id), str(report.batch_id)]
    )
    docs = read_batch(run.settings, entity, str(report.batch_id))
    assert docs[0]["request"]["params"]["updated_since"] == old_high_water
    ids = ids_of(items_of(docs), entity)
    assert sorted(ids) == sorted(expected)
    assert report.high_water == iso_z(max(run.rows_after[entity].values()))


def test_rerun_with_no_new_data_writes_nothing(incremental: IncrementalRun) -> None:
    run = incremental
    assert run.third.pages == 0 and run.third.items == 0
    for entity in ("shows", "episodes"):
        assert run.third[entity].completed and run.third[entity].batch_id is None
        assert run.third[entity].high_water == run.second[entity].high_water
    assert landing_snapshot(run.settings) == run.landing_before_third
    assert load_cursor(run.settings) == run.cursor_before_third


def test_incremental_runs_see_every_show_the_simulation_added_or_edited(
    incremental: IncrementalRun,
) -> None:
    run = incremental
    changed = {i for i, row in run.shows_after.items() if run.shows_before.get(i) != row}
    assert changed
    second = set(
        ids_of(
            items_of(read_batch(run.settings, "shows", str(run.second["shows"].batch_id))), "shows"
        )
    )
    assert changed <= second


# -- 5. errors ---------------------------------------------------------------------------------


def test_a_4xx_stops_at_once_with_the_servers_message_and_a_rerun_recovers(
    calm_server: CatalogueServer, sink: Settings, source: Settings
) -> None:
    sleep = RecordingSleep()
    with pytest.raises(ExtractError, match=r"HTTP 400.*page_size") as info:
        extract_catalogue(sink, calm_server.url, ("shows",), page_size=501, sleep=sleep)
    assert info.value.status == 400
    assert info.value.url == f"{calm_server.url}/v1/shows"
    assert "less than or equal to 500" in str(info.value)
    assert sleep.calls == []  # not retried
    assert batches(sink, "shows") == []  # no file for an error
    report = extract_catalogue(sink, calm_server.url, ("shows",), page_size=100, sleep=no_sleep)
    assert report["shows"].completed and report["shows"].items == len(
        catalogue_rows(source, "shows")
    )


def test_a_page_over_the_size_bound_stops_unread_and_lands_nothing(
    calm_server: CatalogueServer, sink: Settings, source: Settings
) -> None:
    """A vendor answering a page larger than `catalogue_max_page_bytes`: the extraction stops
    at once with the bound in the message, not retried, nothing landed, the cursor kept; with
    a bound the pages fit, a rerun extracts everything."""
    sleep = RecordingSleep()
    tight = sink.model_copy(update={"catalogue_max_page_bytes": 4096})
    with pytest.raises(ExtractError, match=r"more than 4,096 bytes.*page_size") as info:
        extract_catalogue(tight, calm_server.url, ("shows",), page_size=200, sleep=sleep)
    assert info.value.status == 200 and sleep.calls == []
    assert batches(sink, "shows") == []
    assert load_cursor(sink).get("shows", {}).get("page_token") is None
    report = extract_catalogue(sink, calm_server.url, ("shows",), page_size=200, sleep=no_sleep)
    assert report["shows"].completed and report["shows"].items == len(
        catalogue_rows(source, "shows")
    )


@pytest.mark.parametrize("kind", ["503", "connect"])
def test_exhausted_retries_mid_batch_keep_the_cursor_and_a_rerun_finishes(
    kind: str, calm_server: CatalogueServer, sink: Settings, source: Settings
) -> None:
    transport = FlakyTransport(after=2, failures=4, kind=kind)
    sleep = RecordingSleep(nap=0)
    with httpx.Client(transport=transport) as client:
        with pytest.raises(ExtractError) as info:
            extract_catalogue(
                sink,
                calm_server.url,
                ("shows",),
                page_size=20,
                client=client,
                sleep=sleep,
                max_attempts=3,
            )
        message = str(info.value)
        assert f"{calm_server.url}/v1/shows" in message
        assert ("HTTP 503" in message) if kind == "503" else ("ConnectError" in message)
        assert "max_attempts=3" in message and "rerun to resume" in message
        assert len(sleep.calls) == 2  # three attempts, two waits
        (batch_id,) = batches(sink, "shows")
        assert load_cursor(sink)["shows"]["next_page"] == 3
        assert len(list(batch_dir(sink, "shows", batch_id).iterdir())) == 2

        report = extract_catalogue(
            sink,
            calm_server.url,
            ("shows",),
            page_size=20,
            client=client,
            sleep=sleep,
            max_attempts=3,
        )
    shows = report["shows"]
    assert shows.resumed and shows.completed and shows.batch_id == batch_id
    assert (shows.retries_5xx, shows.retries_transport) == ((1, 0) if kind == "503" else (0, 1))
    ids = ids_of(items_of(read_batch(sink, "shows", batch_id)), "shows")
    assert sorted(ids) == sorted(catalogue_rows(source, "shows"))


def test_server_failures_on_the_first_page_exhaust_then_a_rerun_resumes(
    source: Settings, sink: Settings
) -> None:
    failing = ApiBehaviour(rate_limit_per_s=1e6, burst=1_000_000, failure_rate=0, fail_first_n=4)
    with CatalogueServer(catalogue_dir(source), failing) as server:
        with pytest.raises(ExtractError, match=r"HTTP 503.*unavailable") as info:
            extract_catalogue(sink, server.url, ("episodes",), sleep=no_sleep, max_attempts=3)
        assert info.value.status == 503
        cursor = load_cursor(sink)["episodes"]
        assert cursor["batch_id"] is not None and cursor["next_page"] == 1
        report = extract_catalogue(sink, server.url, ("episodes",), sleep=no_sleep)
    episodes = report["episodes"]
    assert episodes.resumed and episodes.batch_id == cursor["batch_id"]
    assert episodes.retries_5xx == 1
    ids = ids_of(items_of(read_batch(sink, "episodes", cursor["batch_id"])), "episodes")
    assert sorted(ids) == sorted(catalogue_rows(source, "episodes"))
