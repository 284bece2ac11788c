"""End to end: the simulator's events through the stream, a crash, ingest and dbt build."""

from __future__ import annotations

import json
import signal
from collections import Counter
from itertools import islice

from loopline.dbt import run_dbt
from loopline.stream.consumer import read_metrics
from loopline.stream.producer import simulated_lines
from loopline.stream.sources import SpoolTarget
from tests.conftest import copy_company, ingest_simulated, query
from tests.stream.conftest import landed_ids
from tests.stream.test_consumer import WAIT_S, _consumer, wait_for


def test_streamed_events_reach_the_warehouse_once_each_across_a_crash(small_sim, tmp_path):
    settings = copy_company(small_sim[0], tmp_path / "data")
    sent = list(islice(simulated_lines(settings), 1500))
    target = SpoolTarget(settings.resolved_stream_spool_path)
    target.publish(sent)
    target.publish(sent[:3])  # an at-least-once producer sends a few events twice
    log = tmp_path / "stream.log"

    first = _consumer(settings, log, 600)  # batches of 200, closed by count only
    wait_for(lambda: (read_metrics(settings) or {}).get("events_total") == 1400, "7 batches", log)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = _consumer(settings, log, 0.2, "--idle-exit", "1")
    assert second.wait(timeout=WAIT_S) == 0, log.read_text()[-2000:]
    assert len(landed_ids(settings.landing_dir)) == 1503  # what the stream held, once each

    ingest_simulated(settings)
    run_dbt(settings, ["build"])
    sent_ids = {json.loads(line)["event_id"] for line in sent}
    # every streamed row is classified once: clean, or quarantined with its reason (the
    # re-sent copies as duplicates; events of users or shows the simulator created after its
    # last saved day as orphans, since only its events were streamed)
    rows = query(
        settings,
        "select event_id, quarantine_reason from staging.base_events__viewing_events "
        "where _file like '%_stream-%'",
    )
    assert len(rows) == 1503
    reasons = Counter(reason for _, reason in rows)
    assert reasons["duplicate"] == 3, reasons
    assert set(reasons) <= {None, "duplicate", "orphan_user", "orphan_show"}, reasons
    kept = Counter(event_id for event_id, reason in rows if reason != "duplicate")
    assert set(kept) == sent_ids and max(kept.values()) == 1
    clean = {event_id for event_id, reason in rows if reason is None}
    staged = query(
        settings,
        "select event_id from staging.stg_events__viewing_events where _file like '%_stream-%'",
    )
    assert sorted(row[0] for row in staged) == sorted(clean)
    # the core mart counts each clean event once: its sessions' events add up to staging's
    ((in_sessions, staged_all),) = query(
        settings,
        "select (select sum(events) from core.fct_viewing_sessions), "
        "(select count(*) from staging.stg_events__viewing_events)",
    )
    assert in_sessions == staged_all
    assert len(clean) > 1000
