"""The simulated catalogue vendor API, exercised over real HTTP against a tiny catalogue."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopline.simulate.vendor_api import (
    MISSING_CATALOGUE_MESSAGE,
    ApiBehaviour,
    CatalogueServer,
    TokenBucket,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CALM = ApiBehaviour(rate_limit_per_s=1e6, burst=1_000_000, failure_rate=0.0)

SHOWS_SCHEMA = pa.schema(
    [
        ("show_id", pa.string()),
        ("title", pa.string()),
        ("genres", pa.list_(pa.string())),
        (
            "cast",
            pa.list_(
                pa.struct(
                    [("name", pa.string()), ("role", pa.string()), ("character", pa.string())]
                )
            ),
        ),
        ("release_date", pa.date32()),
        ("maturity_rating", pa.string()),
        ("language", pa.string()),
        ("description", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
EPISODES_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("show_id", pa.string()),
        ("season", pa.int32()),
        ("episode_number", pa.int32()),
        ("title", pa.string()),
        ("duration_s", pa.int32()),
        ("released_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def show_row(i: int, updated_at: datetime, title: str | None = None) -> dict[str, Any]:
    """One show row in the simulator's schema."""
    return {
        "show_id": f"sh_{i:05d}",
        "title": title or f"Show {i}",
        "genres": ["drama", "comedy"][: 1 + i % 2],
        "cast": [
            {"name": f"Actor {i}", "role": "lead", "character": f"Hero {i}"},
            {"name": f"Director {i}", "role": "director", "character": None},
        ],
        "release_date": date(2020, 1, 1) + timedelta(days=i),
        "maturity_rating": "PG-13",
        "language": "en",
        "description": f"About show {i}.",
        "updated_at": updated_at,
    }


def episode_row(i: int, updated_at: datetime) -> dict[str, Any]:
    """One episode row in the simulator's schema."""
    return {
        "episode_id": f"ep_{i:06d}",
        "show_id": f"sh_{i % 3:05d}",
        "season": 1 + i // 10,
        "episode_number": 1 + i % 10,
        "title": f"Episode {i}",
        "duration_s": 1800 + i,
        "released_at": T0 - timedelta(days=30 - i),
        "updated_at": updated_at,
    }


def base_shows() -> list[dict[str, Any]]:
    """23 shows, written out of order, with ties on updated_at (broken by show_id)."""
    rows = [show_row(i, T0 + timedelta(hours=i // 2)) for i in range(23)]
    return rows[::-1]


def base_episodes() -> list[dict[str, Any]]:
    """12 episodes, one per minute, written out of order."""
    rows = [episode_row(i, T0 + timedelta(minutes=i)) for i in range(12)]
    return rows[5:] + rows[:5]


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Write atomically via rename, like the simulator does."""
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def write_catalogue(
    folder: Path,
    shows: list[dict[str, Any]] | None = None,
    episodes: list[dict[str, Any]] | None = None,
) -> None:
    """The simulator's two files."""
    write_parquet(folder / "shows.parquet", base_shows() if shows is None else shows, SHOWS_SCHEMA)
    write_parquet(
        folder / "episodes.parquet",
        base_episodes() if episodes is None else episodes,
        EPISODES_SCHEMA,
    )


def expected_show_ids(rows: list[dict[str, Any]]) -> list[str]:
    """Show ids in the API's order: (updated_at, show_id)."""
    return [r["show_id"] for r in sorted(rows, key=lambda r: (r["updated_at"], r["show_id"]))]


def walk(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a collection, following next_page_token until has_more is false."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(1000):
        query = dict(params)
        if token is not None:
            query["page_token"] = token
        resp = client.get(path, params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items.extend(body["data"])
        assert body["has_more"] == (body["next_page_token"] is not None)
        if not body["has_more"]:
            return items
        token = body["next_page_token"]
    raise AssertionError("pagination did not terminate")


@pytest.fixture
def catalogue_dir(tmp_path: Path) -> Path:
    """A folder with the base catalogue written into it."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    write_catalogue(folder)
    return folder


@pytest.fixture
def calm_client(catalogue_dir: Path) -> Iterator[httpx.Client]:
    """A client on a server that neither rate-limits nor fails."""
    with (
        CatalogueServer(catalogue_dir, CALM) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        yield client


# -- basics ---------------------------------------------------------------------------------------


def test_server_binds_a_free_port_and_answers_healthz(catalogue_dir: Path) -> None:
    with CatalogueServer(catalogue_dir, CALM, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.port > 0
        resp = httpx.get(f"{server.url}/healthz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok"}
        url = server.url
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=1)


def test_shows_have_nested_json_shape(calm_client: httpx.Client) -> None:
    body = calm_client.get("/v1/shows", params={"page_size": 1}).json()
    assert set(body) == {"data", "next_page_token", "has_more", "server_time"}
    assert body["server_time"].endswith("Z")
    datetime.fromisoformat(body["server_time"])
    (show,) = body["data"]
    assert show["show_id"] == "sh_00000"
    assert show["genres"] == ["drama"]
    assert show["cast"] == [
        {"name": "Actor 0", "role": "lead", "character": "Hero 0"},
        {"name": "Director 0", "role": "director", "character": None},
    ]
    assert show["metadata"] == {
        "maturity_rating": "PG-13",
        "language": "en",
        "release_date": "2020-01-01",
    }
    assert show["updated_at"].endswith("Z")
    assert datetime.fromisoformat(show["updated_at"]) == T0


def test_episodes_are_flat_with_show_id(calm_client: httpx.Client) -> None:
    items = walk(calm_client, "/v1/episodes", page_size=5)
    assert [e["episode_id"] for e in items] == [f"ep_{i:06d}" for i in range(12)]
    first = items[0]
    assert first == {
        "episode_id": "ep_000000",
        "show_id": "sh_00000",
        "season": 1,
        "episode_number": 1,
        "title": "Episode 0",
        "duration_s": 1800,
        "released_at": "2025-12-02T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
    }


# -- pagination and filtering ---------------------------------------------------------------------


def test_pagination_walks_every_item_once_in_order(calm_client: httpx.Client) -> None:
    pages = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 5}
        if token:
            params["page_token"] = token
        body = calm_client.get("/v1/shows", params=params).json()
        pages.append([s["show_id"] for s in body["data"]])
        token = body["next_page_token"]
        if not body["has_more"]:
            assert token is None
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    ids = [i for page in pages for i in page]
    assert ids == expected_show_ids(base_shows())
    assert len(set(ids)) == 23


def test_page_size_larger_than_catalogue_is_one_page(calm_client: httpx.Client) -> None:
    body = calm_client.get("/v1/shows", params={"page_size": 500}).json()
    assert len(body["data"]) == 23
    assert body["has_more"] is False
    assert body["next_page_token"] is None


def test_default_page_size_is_100(tmp_path: Path) -> None:
    rows = [show_row(i, T0 + timedelta(seconds=i)) for i in range(130)]
    write_catalogue(tmp_path, shows=rows)
    with CatalogueServer(tmp_path, CALM) as server:
        body = httpx.get(f"{server.url}/v1/shows").json()
    assert len(body["data"]) == 100
    assert body["has_more"] is True


def test_updated_since_is_strictly_greater(calm_client: httpx.Client) -> None:
    # shows 6 and 7 share updated_at = T0 + 3h: both are excluded, 8.. are included
    since = T0 + timedelta(hours=3)
    for text in (
        "2026-01-01T03:00:00Z",
        "2026-01-01T03:00:00+00:00",
        "2026-01-01T04:00:00+01:00",
        "2026-01-01T03:00:00",
    ):
        items = walk(calm_client, "/v1/shows", updated_since=text, page_size=4)
        ids = [s["show_id"] for s in items]
        assert ids == [f"sh_{i:05d}" for i in range(8, 23)], text
        assert all(datetime.fromisoformat(s["updated_at"]) > since for s in items)
    # one microsecond earlier lets the tie back in
    items = walk(calm_client, "/v1/shows", updated_since="2026-01-01T02:59:59.999999Z")
    assert [s["show_id"] for s in items][:2] == ["sh_00006", "sh_00007"]


def test_updated_since_after_everything_is_empty(calm_client: httpx.Client) -> None:
    body = calm_client.get("/v1/shows", params={"updated_since": "2030-01-01T00:00:00Z"}).json()
    assert body == {**body, "data": [], "has_more": False, "next_page_token": None}


def test_page_token_carries_the_updated_since_filter(calm_client: httpx.Client) -> None:
    first = calm_client.get(
        "/v1/shows", params={"updated_since": "2026-01-01T08:00:00Z", "page_size": 2}
    ).json()
    assert [s["show_id"] for s in first["data"]] == ["sh_00018", "sh_00019"]
    # the token alone continues the filtered walk
    rest = calm_client.get("/v1/shows", params={"page_token": first["next_page_token"]}).json()
    assert [s["show_id"] for s in rest["data"]] == ["sh_00020", "sh_00021", "sh_00022"]
    # a token with a contradicting filter is refused
    clash = calm_client.get(
        "/v1/shows",
        params={"page_token": first["next_page_token"], "updated_since": "2026-01-01T00:00:00Z"},
    )
    assert clash.status_code == 400
    assert "updated_since" in clash.json()["message"]


# -- reloads --------------------------------------------------------------------------------------


def test_reload_after_file_rewrite(catalogue_dir: Path, calm_client: httpx.Client) -> None:
    before = walk(calm_client, "/v1/shows", page_size=50)
    assert len(before) == 23
    renamed = [show_row(i, T0 + timedelta(days=1, seconds=i), title=f"New {i}") for i in range(4)]
    write_catalogue(catalogue_dir, shows=renamed)
    after = walk(calm_client, "/v1/shows", page_size=50)
    assert [s["title"] for s in after] == ["New 0", "New 1", "New 2", "New 3"]
    # episodes were rewritten with the same rows and still serve
    assert len(walk(calm_client, "/v1/episodes")) == 12


def test_page_token_survives_rewrite_with_new_items(
    catalogue_dir: Path, calm_client: httpx.Client
) -> None:
    first = calm_client.get("/v1/shows", params={"page_size": 5}).json()
    seen = [s["show_id"] for s in first["data"]]
    # the simulator adds three later shows and one backdated show, and rewrites the file
    added_late = [show_row(100 + k, T0 + timedelta(days=2, minutes=k)) for k in range(3)]
    backdated = show_row(200, T0 - timedelta(days=1))
    write_catalogue(catalogue_dir, shows=[*base_shows(), *added_late, backdated])
    rest = walk(calm_client, "/v1/shows", page_size=5, page_token=first["next_page_token"])
    seen += [s["show_id"] for s in rest]
    assert seen == [*expected_show_ids(base_shows()), "sh_00100", "sh_00101", "sh_00102"]
    assert "sh_00200" not in seen  # before the cursor: keyset pagination does not go back


# -- rate limiting and injected failures ---------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(catalogue_dir: Path) -> None:
    behaviour = ApiBehaviour(rate_limit_per_s=0.01, burst=3, failure_rate=0.0)
    with (
        CatalogueServer(catalogue_dir, behaviour) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        statuses = [client.get("/v1/episodes").status_code for _ in range(3)]
        limited = client.get("/v1/shows")
        health = client.get("/healthz")
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    retry_after = limited.headers["Retry-After"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    assert limited.json()["error"] == "rate_limited"
    assert health.status_code == 200  # health checks are not rate-limited


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2.0, capacity=3, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.5)
    now[0] += 0.25
    assert bucket.try_acquire() == pytest.approx(0.25)
    now[0] += 0.25
    assert bucket.try_acquire() == 0.0
    now[0] += 100.0  # refills to capacity, not beyond
    assert [bucket.try_acquire() for _ in range(4)][-1] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate_limit_per_s": 0}, {"burst": 0}, {"failure_rate": 1.5}, {"fail_first_n": -1}],
)
def test_behaviour_rejects_impossible_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ApiBehaviour(**kwargs)


def test_fail_first_n_gives_503s_then_success(catalogue_dir: Path) -> None:
    behaviour = ApiBehaviour(rate_limit_per_s=1e6, burst=1000, failure_rate=0.0, fail_first_n=2)
    with (
        CatalogueServer(catalogue_dir, behaviour) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/healthz").status_code == 200  # does not count
        responses = [client.get("/v1/shows") for _ in range(4)]
    assert [r.status_code for r in responses] == [503, 503, 200, 200]
    assert responses[0].headers["Retry-After"] == "1"
    assert responses[0].json()["error"] == "unavailable"
    assert len(responses[2].json()["data"]) == 23


def _failure_sequence(catalogue_dir: Path, seed: int, n: int = 200) -> list[int]:
    """Statuses of n data requests against a server failing 30% of the time."""
    behaviour = ApiBehaviour(rate_limit_per_s=1e6, burst=10_000, failure_rate=0.3, seed=seed)
    with (
        CatalogueServer(catalogue_dir, behaviour) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        return [client.get("/v1/episodes", params={"page_size": 1}).status_code for _ in range(n)]


def test_failure_rate_is_seeded_and_roughly_right(catalogue_dir: Path) -> None:
    first = _failure_sequence(catalogue_dir, seed=7)
    again = _failure_sequence(catalogue_dir, seed=7)
    other = _failure_sequence(catalogue_dir, seed=8)
    assert first == again
    assert first != other
    assert set(first) == {200, 500, 503}
    failed = sum(s != 200 for s in first) / len(first)
    assert 0.18 < failed < 0.42


def test_injected_503_has_retry_after_and_500_does_not(catalogue_dir: Path) -> None:
    behaviour = ApiBehaviour(rate_limit_per_s=1e6, burst=1000, failure_rate=1.0, seed=3)
    with (
        CatalogueServer(catalogue_dir, behaviour) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        responses = [client.get("/v1/shows") for _ in range(20)]
    by_status = {r.status_code: r for r in responses}
    assert set(by_status) == {500, 503}
    assert by_status[503].headers["Retry-After"] == "1"
    assert "Retry-After" not in by_status[500].headers
    assert by_status[500].json()["error"] == "internal_error"


# -- bad requests and a missing catalogue ---------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 0},
        {"page_size": 501},
        {"page_size": "ten"},
        {"updated_since": "yesterday"},
        {"updated_since": "2026-13-01T00:00:00Z"},
        {"page_token": "not-a-token"},
        {"page_token": "e30"},  # base64 of "{}": valid JSON, not our token
        {"page_token": "!!!"},
    ],
)
def test_bad_parameters_are_4xx_json(calm_client: httpx.Client, params: dict[str, Any]) -> None:
    resp = calm_client.get("/v1/shows", params=params)
    assert resp.status_code in (400, 422), resp.text
    body = resp.json()
    assert isinstance(body["message"], str)
    assert body["message"]


def test_page_token_for_another_collection_is_refused(calm_client: httpx.Client) -> None:
    token = calm_client.get("/v1/shows", params={"page_size": 2}).json()["next_page_token"]
    assert token
    resp = calm_client.get("/v1/episodes", params={"page_token": token})
    assert resp.status_code == 400
    assert "/v1/shows" in resp.json()["message"]


def test_missing_catalogue_is_503_until_generated(tmp_path: Path) -> None:
    with (
        CatalogueServer(tmp_path, CALM) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/healthz").status_code == 200
        for path in ("/v1/shows", "/v1/episodes"):
            resp = client.get(path)
            assert resp.status_code == 503
            assert resp.json()["message"] == MISSING_CATALOGUE_MESSAGE
        write_catalogue(tmp_path)
        resp = client.get("/v1/shows")
        assert resp.status_code == 200
        assert len(resp.json()["data"]) == 23


def test_unknown_path_is_json_404(calm_client: httpx.Client) -> None:
    resp = calm_client.get("/v1/movies")
    assert resp.status_code == 404
    assert resp.json()["error"] == "http_error"
