"""`loopline serve` as a real process while the line runs beside it (issues 11 and 13).

A client thread keeps asking the API for churn scores and recommendations while:

- a colour with a critical defect is audited and its publication refused: the views keep the
  last good colour, the online store keeps its rows, and every answer is a 200 with the model
  version and the numbers it gave before (in `make test`, on one copied feature schema;
  slow-marked, the whole line flow on bad source data: ingest, dbt build, audit);
- (slow-marked) the whole line flow ingests new days, rebuilds the warehouse into the other
  colour and publishes it, and `loopline promote --rollback` moves ``@champion`` during the
  build: zero 5xx, zero connection errors, and the answers move to the new version and to the
  new day's features.

The API reads only the online store (SQLite, WAL) and the MLflow registry, never the DuckDB
warehouse, so a build's writer lock should never reach it; if it ever did, these tests would
see the errors.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopline import services
from loopline.publish import PublicationBlockedError, audit_and_publish, publish
from loopline.settings import Settings, get_settings
from ml.churn.model import TrainParams
from ml.churn.train import train_churn
from ml.config import ChurnConfig, RecommenderConfig
from ml.features.definitions import CHURN, USER_HISTORY
from ml.features.materialize import refresh_online_store
from ml.recommender.train import train_recommender
from ml.registry import PromotionPolicy
from tests.conftest import SMALL_UNTIL, copy_company, query, small_config

# one cheap logistic regression; margin 0 promotes an equal second version, so a rollback
# has somewhere to go (the small company is too small for a user-disjoint holdout)
FAST = ChurnConfig(
    train=TrainParams.model_validate(
        {"entity": None, "candidates": ["logreg"], "logreg_grid": {"C": [1.0]}}
    ),
    policy=PromotionPolicy(gate={"roc_auc": 0.5}, compare_on="roc_auc", margin=0.0),
    importance_rows=200,
)
USERS = 6  # users each endpoint is asked about, round robin


# --------------------------------------------------------------------------------------------
# the API as a process, and a client that keeps asking it


def serve(settings: Settings, log: Path) -> tuple[services.Running, str]:
    """`loopline serve` on a free port, following @champion every 0.2 s; ready when it scores."""
    port = services.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env |= {"LOOPLINE_DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "loopline.cli", "serve", "--port", str(port),
               "--poll-seconds", "0.2"]  # fmt: skip
    running = services.launch("api", command, log, env, port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        services.wait_ready(running, f"{url}/readyz", timeout_s=180)
    except services.ServiceError:
        services.stop(running)
        raise
    return running, url


def online_store(settings: Settings) -> closing[sqlite3.Connection]:
    """A read-only connection to the embedded online store, closed at the end of the block."""
    path = settings.data_dir / "online" / "online_store.sqlite"
    return closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True))


def served_users(settings: Settings) -> tuple[list[int], list[int]]:
    """Users the online store holds a churn vector for, and users with a viewing history."""
    with online_store(settings) as con:
        picked = []
        for feature_set in (CHURN.name, USER_HISTORY.name):
            # the newest vectors first: users still subscribed on the last day
            rows = con.execute(
                "select entity_key from online_vectors where feature_set = ? "
                "group by entity_key order by max(feature_timestamp_us) desc, entity_key "
                "limit ?",
                [feature_set, USERS],
            ).fetchall()
            picked.append([int(key) for (key,) in rows])
    assert all(len(users) == USERS for users in picked), picked
    return picked[0], picked[1]


def online_rows(settings: Settings) -> list[tuple[Any, ...]]:
    """Every row of the online store, in key order."""
    with online_store(settings) as con:
        return con.execute("select * from online_vectors order by 1, 2, 3").fetchall()


def ask(client: httpx.Client, endpoint: str, user: int) -> httpx.Response:
    if endpoint == "churn":
        return client.post("/v1/churn/score", json={"user_id": user})
    return client.get(f"/v1/recommendations/{user}", params={"k": 5})


def answer_of(endpoint: str, body: dict[str, Any]) -> tuple[str, object]:
    """What must not change while nothing is published: the version and the numbers."""
    if endpoint == "churn":
        value: object = (body["churn_probability"], body["feature_timestamp"])
    else:
        value = tuple(r["show_id"] for r in body["recommendations"])
    return body["model"]["version"], value


@dataclass
class Asked:
    endpoint: str
    user: int
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    version: str | None = None
    value: object = None
    error: str | None = None
    during: bool = False  # asked while `Load.during` was set
    at: float = field(default_factory=time.monotonic)  # when the answer came


@dataclass
class Load:
    """A client thread asking both endpoints about `churn_users` and `recs_users` in turn."""

    url: str
    churn_users: list[int]
    recs_users: list[int]
    asked: list[Asked] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    during: threading.Event = field(default_factory=threading.Event)  # set by the test

    def run(self) -> None:
        plan = [("churn", u) for u in self.churn_users] + [("recs", u) for u in self.recs_users]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                for endpoint, user in plan:
                    during = self.during.is_set()
                    try:
                        response = ask(client, endpoint, user)
                    except httpx.HTTPError as exc:
                        self.asked.append(Asked(endpoint, user, None, error=repr(exc)))
                        continue
                    if response.status_code != 200:
                        self.asked.append(
                            Asked(endpoint, user, response.status_code, error=response.text[:300])
                        )
                        continue
                    version, value = answer_of(endpoint, response.json())
                    self.asked.append(Asked(endpoint, user, 200, version, value, during=during))

    def failures(self) -> list[Asked]:
        return [a for a in self.asked if a.status != 200]


@dataclass
class LoadThread:
    load: Load
    thread: threading.Thread


def start_load(url: str, churn_users: list[int], recs_users: list[int]) -> LoadThread:
    load = Load(url, churn_users, recs_users)
    thread = threading.Thread(target=load.run, name="api-load", daemon=True)
    thread.start()
    return LoadThread(load, thread)


def stop_load(running: LoadThread) -> Load:
    running.load.stop.set()
    running.thread.join(timeout=60)
    assert not running.thread.is_alive(), "the client thread hangs"
    return running.load


def baseline(url: str, churn_users: list[int], recs_users: list[int]) -> dict[tuple, tuple]:
    """(endpoint, user) -> (version, numbers) as the API answers now."""
    out = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for endpoint, users in (("churn", churn_users), ("recs", recs_users)):
            for user in users:
                response = ask(client, endpoint, user)
                assert response.status_code == 200, response.text
                out[(endpoint, user)] = answer_of(endpoint, response.json())
    return out


def views(settings: Settings) -> dict[tuple[str, str], str | None]:
    """Every plain-schema view and the colour it reads (None: a view of a plain dbt build).

    The colour, not the SQL text: DuckDB re-renders a view's SQL (the order of an EXCLUDE
    list can differ between connections), so equal views can print differently.
    """
    rows = query(
        settings,
        "select schema_name, view_name, sql from duckdb_views() where not internal "
        "and not regexp_matches(schema_name, '__(blue|green)$')",
    )
    out = {}
    for schema, name, sql in rows:
        found = re.search(rf'\bfrom\s+"?{re.escape(schema)}__(blue|green)"?\.', sql, re.I)
        out[(schema, name)] = found.group(1) if found else None
    return out


def publications(settings: Settings) -> list[str]:
    return [c for (c,) in query(settings, "select colour from monitoring.publications order by "
                                          "published_at")]  # fmt: skip


def train_champions(settings: Settings, churn_versions: int) -> None:
    """Churn v1 (then v2, promoted: equal is enough at margin 0), recommender v1."""
    for _ in range(churn_versions):
        outcome = train_churn(settings, FAST)
        assert outcome.decision.promoted, outcome.decision
    train_recommender(settings, RecommenderConfig())


# --------------------------------------------------------------------------------------------
# in `make test`: a defective colour is refused while the API keeps answering


def copy_schema(settings: Settings, source: str, target: str) -> None:
    """Schema `target` as a copy of the tables in `source` (a colour without a dbt build)."""
    tables = query(
        settings,
        "select table_name from information_schema.tables "
        f"where table_schema = '{source}' and table_type = 'BASE TABLE'",
    )
    statements = [f"create schema {target}"] + [
        f"create table {target}.{t} as select * from {source}.{t}" for (t,) in tables
    ]
    query(settings, ";\n".join(statements))


@pytest.fixture(scope="module")
def refused(built_warehouse, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The session warehouse's feature marts published as blue, a champion served from them,
    and a green copy with a defect only the audit sees (three duplicated feature rows)."""
    folder = tmp_path_factory.mktemp("refused")
    settings = copy_company(built_warehouse[0], folder / "data")
    copy_schema(settings, "features", "features__blue")  # what a plain dbt build left
    publish(settings, "blue")  # the last good publication
    refresh_online_store(settings)
    train_champions(settings, churn_versions=1)
    copy_schema(settings, "features__blue", "features__green")
    query(
        settings,
        "insert into features__green.fs_churn__user_daily "
        "select * from features__green.fs_churn__user_daily limit 3",
    )
    api, url = serve(settings, folder / "api.log")
    try:
        yield {"settings": settings, "url": url}
    finally:
        services.stop(api)


def test_a_refused_publication_leaves_the_api_answering_from_the_last_good_data(refused) -> None:
    settings, url = refused["settings"], refused["url"]
    churn_users, recs_users = served_users(settings)
    before = baseline(url, churn_users, recs_users)
    assert {version for version, _ in before.values()} == {"1"}  # churn v1, recommender v1
    views_before, online_before = views(settings), online_rows(settings)
    published = [colour for (schema, _), colour in views_before.items() if schema == "features"]
    assert published and set(published) == {"blue"}

    load = start_load(url, churn_users, recs_users)
    try:
        with pytest.raises(PublicationBlockedError) as blocked:
            audit_and_publish(settings, "green", ["features.fs_churn__user_daily"])
    finally:
        asked = stop_load(load)

    assert blocked.value.suites == ["features.fs_churn__user_daily"]
    assert views(settings) == views_before  # still blue
    assert publications(settings) == ["blue"]
    assert online_rows(settings) == online_before
    assert asked.failures() == []
    assert len(asked.asked) >= 2 * USERS  # the thread finishes every round it starts
    for a in asked.asked:
        assert (a.version, a.value) == before[(a.endpoint, a.user)], a


# --------------------------------------------------------------------------------------------
# slow: the whole line flow beside the API


class _PhaseSeen(logging.Handler):
    """Sets `event` when loopline reports the phase `name` finished."""

    def __init__(self, name: str, event: threading.Event) -> None:
        super().__init__()
        self.name_ = name
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"{self.name_} "):
            self.event.set()


@pytest.fixture(scope="module")
def line_served(built_warehouse, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A company published by one line run (blue), champions trained on it, the API serving
    them, the line's process settings and a calm catalogue API for the next runs."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.line import LineParams, line
    from loopline.simulate.run import catalogue_dir
    from loopline.simulate.vendor_api import ApiBehaviour, CatalogueServer

    folder = tmp_path_factory.mktemp("line_served")
    settings = copy_company(built_warehouse[0], folder / "data")
    calm = ApiBehaviour(rate_limit_per_s=1e6, burst=1_000_000, failure_rate=0.0)
    with (
        pytest.MonkeyPatch.context() as env,
        prefect_test_harness(server_startup_timeout=120),
        CatalogueServer(catalogue_dir(settings), calm) as vendor,
    ):
        env.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
        get_settings.cache_clear()
        params = LineParams(catalogue_url=vendor.url)
        first = line(params)
        assert first["published"]["published"] == "blue", first
        train_champions(settings, churn_versions=2)
        api, url = serve(settings, folder / "api.log")
        try:
            yield {"settings": settings, "url": url, "params": params, "line": line}
        finally:
            services.stop(api)
            get_settings.cache_clear()


@pytest.mark.slow
def test_the_api_answers_through_a_rebuild_a_publication_and_a_moving_alias(line_served) -> None:
    """Issue 13: zero 5xx while dbt rebuilds the warehouse and while @champion moves."""
    from loopline.simulate import simulate

    settings, url, line = line_served["settings"], line_served["url"], line_served["line"]
    live = publications(settings)[-1]
    churn_users, recs_users = served_users(settings)
    before = baseline(url, churn_users, recs_users)
    assert before[("churn", churn_users[0])][0] == "2"
    # three more days arrive
    simulate(settings, SMALL_UNTIL + timedelta(days=3), small_config(), progress=False)

    ingested = threading.Event()
    seen = _PhaseSeen("ingest", ingested)
    logging.getLogger("loopline").addHandler(seen)
    rollback: dict[str, Any] = {}
    timeline: dict[str, float] = {}

    def roll_back_once_the_build_starts() -> None:
        # `loopline promote --rollback` as a user runs it, once ingest is done and dbt
        # starts: the alias moves at once, the decision is recorded when the build lets go
        # of the writer lock
        if not ingested.wait(timeout=600):
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
        env["LOOPLINE_DATA_DIR"] = str(settings.data_dir)
        timeline["rollback starts"] = time.monotonic()
        rollback["done"] = subprocess.run(
            [sys.executable, "-m", "loopline.cli", "promote", "--rollback"],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        timeline["rollback ends"] = time.monotonic()

    mover = threading.Thread(target=roll_back_once_the_build_starts, name="rollback")
    load = start_load(url, churn_users, recs_users)
    mover.start()
    try:
        load.load.during.set()
        timeline["run starts"] = time.monotonic()
        # a full refresh: the colour it builds may hold a refused build (the next test's)
        result = line(line_served["params"].model_copy(update={"full_refresh": True}))
        timeline["run ends"] = time.monotonic()
        load.load.during.clear()
        mover.join(timeout=900)
        # once more after the run: the answers come from the refreshed store
        with httpx.Client(base_url=url, timeout=30) as client:
            after = {u: ask(client, "churn", u).json() for u in churn_users}
    finally:
        ingested.set()  # release the mover if the run failed before ingesting
        logging.getLogger("loopline").removeHandler(seen)
        asked = stop_load(load)
        mover.join(timeout=900)

    done = rollback["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "@champion is v1 again" in done.stdout
    # the run published the other colour and refreshed the online store
    assert result["published"]["published"] != live and result["published"]["previous"] == live
    assert publications(settings)[-1] == result["published"]["published"]
    assert result["online"]["written"] > 0

    assert asked.failures() == [], asked.failures()[:5]
    churn = [a.version for a in asked.asked if a.endpoint == "churn"]
    assert churn[0] == "2" and churn[-1] == "1", set(churn)
    switch = churn.index("1")
    assert set(churn[switch:]) == {"1"}  # once moved, never back
    # the move was seen while the run was still building, auditing or publishing
    first_v1 = next(a.at for a in asked.asked if a.version == "1" and a.endpoint == "churn")
    timeline["first v1 answer"] = first_v1
    zero = timeline["run starts"]
    told = {k: round(v - zero, 1) for k, v in sorted(timeline.items(), key=lambda kv: kv[1])}
    assert any(a.version == "1" and a.during for a in asked.asked), told
    assert {a.version for a in asked.asked if a.endpoint == "recs"} == {"1"}
    # the answers moved to the new days' features (the store is refreshed after publication)
    assert {body["model"]["version"] for body in after.values()} == {"1"}
    moved = [after[u]["feature_timestamp"] > before[("churn", u)][1][1] for u in churn_users]
    assert any(moved), after  # users still subscribed: the new days' vectors


@pytest.mark.slow
def test_bad_source_data_stops_the_line_before_publication_while_the_api_keeps_answering(
    line_served,
) -> None:
    """Issue 11: a critical failure stops the line flow; views, online store and answers stay."""
    settings, url, line = line_served["settings"], line_served["url"], line_served["line"]
    live = publications(settings)[-1]
    churn_users, recs_users = served_users(settings)
    before = baseline(url, churn_users, recs_users)
    views_before, online_before = views(settings), online_rows(settings)
    assert set(views_before.values()) == {live}

    # the source system starts storing US prices as negative numbers: dbt's tests have no
    # opinion on the sign, the churn feature set's suite does (plan_price_usd >= 0, critical)
    oltp = sqlite3.connect(settings.source_sqlite_path)
    with oltp:
        oltp.execute(
            "update plan_prices set monthly_price_minor = -monthly_price_minor "
            "where currency = 'USD'"
        )
    load = start_load(url, churn_users, recs_users)
    try:
        with pytest.raises(PublicationBlockedError) as blocked:
            line(line_served["params"])
    finally:
        asked = stop_load(load)
        with oltp:  # the source is repaired for whatever runs next
            oltp.execute(
                "update plan_prices set monthly_price_minor = -monthly_price_minor "
                "where currency = 'USD'"
            )
        oltp.close()

    assert "features.fs_churn__user_daily" in blocked.value.suites
    assert blocked.value.colour != live
    failed = query(
        settings,
        "select distinct expectation_type, column_name from monitoring.validation_results "
        "where not success and critical and relation like '%fs_churn__user_daily'",
    )
    assert ("expect_column_values_to_be_between", "plan_price_usd") in failed, failed
    assert publications(settings)[-1] == live
    assert views(settings) == views_before
    assert online_rows(settings) == online_before  # the refresh never ran
    assert asked.failures() == []
    assert len(asked.asked) >= 2 * USERS
    for a in asked.asked:
        assert (a.version, a.value) == before[(a.endpoint, a.user)], a
    # and after the run: still the same answers
    assert baseline(url, churn_users, recs_users) == before
