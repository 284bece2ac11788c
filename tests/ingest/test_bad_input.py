"""Bad input, end to end: oversized records, wrong encodings, a CSV export whose columns
changed, the same file delivered twice, links out of the landing folder and files changed
after they were loaded. Each ends loaded, quarantined or rejected with a reason; nothing is
lost and `monitoring.fct_load_accounting` balances.

One hostile delivery is landed on a copy of the session's built warehouse, ingested once and
built once (incrementally); each test checks one case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopline.dbt import run_dbt
from loopline.ingest.files import PAYMENT_COLUMNS
from loopline.ingest.run import IngestReport
from loopline.settings import Settings
from tests.conftest import copy_company, ingest_simulated, query

LIMIT = 64 << 10  # a small bound, so the test's oversized records stay small
HEADER = ",".join(PAYMENT_COLUMNS)
# each case and its outcome goes into docs/reliability.md (`python -m loopline.reliability`)
pytestmark = pytest.mark.reliability("bad_input")


@dataclass
class Hostile:
    settings: Settings
    report: IngestReport
    outside: Path  # a folder outside the landing folder that a link pointed at
    changed: dict[str, str]  # loaded file -> how it was changed afterwards


def _clean_events(settings: Settings, prefix: str, n: int = 3) -> list[str]:
    """`n` clean event lines of the simulated company under new event ids (`ev_<prefix>_<i>`),
    from its last hour (so they are not later than the line's lookback for late events)."""
    rows = query(
        settings,
        "select _file, _line_no from staging.stg_events__viewing_events "
        f"order by _file desc, _line_no limit {n}",
    )
    out = []
    for i, (file, line_no) in enumerate(rows):
        doc = json.loads((settings.landing_dir / file).read_text().splitlines()[line_no - 1])
        doc["event_id"] = f"ev_{prefix}_{i}"
        out.append(json.dumps(doc, separators=(",", ":")))
    return out


def _huge(what: str) -> str:
    return json.dumps({f"{what}_id": f"{what}_huge", "padding": "x" * (LIMIT + 10)})


@pytest.fixture(scope="module")
def hostile(built_warehouse, tmp_path_factory) -> Hostile:
    base, _ = built_warehouse
    root = tmp_path_factory.mktemp("hostile")
    settings = copy_company(base, root / "data").model_copy(update={"max_record_bytes": LIMIT})
    landing = settings.landing_dir
    events = landing / "events" / "date=2026-02-13"
    events.mkdir(parents=True, exist_ok=True)
    tickets = landing / "tickets"
    payments = landing / "payments"

    # oversized records among ordinary ones, in each kind of file
    good = _clean_events(settings, "big")
    (events / "events_20260213T20_big.ndjson").write_text(
        "\n".join([good[0], _huge("event"), good[1]]) + "\n"
    )
    ticket = (sorted(tickets.glob("tickets_*.ndjson"))[0]).read_text().splitlines()[0]
    (tickets / "tickets_20260213_big.ndjson").write_text(
        _huge("ticket") + "\n" + ticket.replace('"tk_', '"tk_big_') + "\n"
    )
    row = (sorted(payments.glob("payments_*.csv"))[0]).read_text().splitlines()[1]
    huge_row = "py_huge," + "x" * (LIMIT + 10) + ",a@b.c,charge,succeeded,100,EUR,,"
    (payments / "payments_20260213_big.csv").write_text(
        "\n".join(
            [HEADER, row.replace("py_", "py_big1_"), huge_row, row.replace("py_", "py_big2_")]
        )
        + "\n"
    )

    # wrong encodings: UTF-16 and Latin-1 are refused whole; CRLF line ends load
    (events / "events_20260213T21_utf16.ndjson").write_bytes(
        ("\n".join(_clean_events(settings, "utf16")) + "\n").encode("utf-16")
    )
    (tickets / "tickets_20260213_latin1.ndjson").write_bytes(
        ticket.replace('"tk_', '"tk_latin1_').replace("Hi", "Olá").encode("latin-1")
        + "é\n".encode("latin-1")
    )
    (events / "events_20260213T22_crlf.ndjson").write_text(
        "\r\n".join(_clean_events(settings, "crlf")) + "\r\n", newline=""
    )
    (payments / "payments_20260213_bom.csv").write_text(
        "\ufeff" + HEADER + "\n" + row.replace("py_", "py_bom_") + "\n"
    )

    # the payment export's columns changed: added, renamed, removed
    (payments / "payments_20260213_added.csv").write_text(
        HEADER + ",note\n" + row.replace("py_", "py_added_") + ",hello\n"
    )
    (payments / "payments_20260213_renamed.csv").write_text(
        HEADER.replace("customer_email", "email") + "\n" + row.replace("py_", "py_renamed_") + "\n"
    )
    (payments / "payments_20260213_removed.csv").write_text(
        HEADER.removesuffix(",failure_reason")
        + "\n"
        + row.replace("py_", "py_removed_").removesuffix(",")
        + "\n"
    )

    # the same files delivered again under other names
    first_events = sorted((landing / "events").glob("date=2026-01-02/events_*.ndjson"))[0]
    (events / "events_20260213T23_again.ndjson").write_bytes(first_events.read_bytes())
    first_payments = sorted(payments.glob("payments_*.csv"))[0]
    (payments / "payments_20260213_again.csv").write_bytes(first_payments.read_bytes())
    first_tickets = sorted(tickets.glob("tickets_*.ndjson"))[0]
    (tickets / "tickets_20260213_again.ndjson").write_bytes(first_tickets.read_bytes())

    # links that lead out of the landing folder: a file, and a whole date= folder
    outside = root / "elsewhere"
    outside.mkdir()
    (outside / "events_20260301T00.ndjson").write_text(
        "\n".join(_clean_events(settings, "outside")) + "\n"
    )
    (tickets / "tickets_20260213_link.ndjson").symlink_to("/etc/hostname")
    (landing / "events" / "date=2026-03-01").symlink_to(outside, target_is_directory=True)

    # files loaded by the first ingest, changed afterwards: a line appended; one byte changed
    appended = sorted((landing / "events").glob("date=2026-01-03/events_*.ndjson"))[0]
    with appended.open("a") as handle:
        handle.write(_clean_events(settings, "appended", 1)[0] + "\n")
    edited = sorted(payments.glob("payments_2026010*.csv"))[1]
    data = bytearray(edited.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    edited.write_bytes(bytes(data))
    changed = {
        str(appended.relative_to(landing)): "appended",
        str(edited.relative_to(landing)): "edited",
    }

    report = ingest_simulated(settings)
    run_dbt(settings, ["build"])  # raises if any test fails (accounting included)
    return Hostile(settings, report, outside, changed)


def _manifest(hostile: Hostile, pattern: str) -> dict[str, tuple[str, str | None, int]]:
    rows = query(
        hostile.settings,
        "select file_path, status, reason, records from raw.file_manifest "
        f"where file_path like '{pattern}' and batch_id = '{hostile.report.batch_id}'",
    )
    return {path: (status, reason, records) for path, status, reason, records in rows}


def _in_raw(hostile: Hostile, file_like: str) -> int:
    ((n,),) = query(
        hostile.settings,
        "select count(*) from (select _file from raw.events_lines union all "
        "select _file from raw.tickets_lines union all select _file from raw.payments_rows) "
        f"where _file like '{file_like}'",
    )
    return n


# -- oversized records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "file", "line_no"),
    [
        ("quarantine_events__viewing_events", "events/date=2026-02-13/events_20260213T20_big.ndjson", 2),
        ("quarantine_support__tickets", "tickets/tickets_20260213_big.ndjson", 1),
        ("quarantine_billing__payments", "payments/payments_20260213_big.csv", 3),
    ],
    ids=["an event", "a ticket", "a payment row"],
)  # fmt: skip
def test_an_oversized_record_is_quarantined_as_a_stub_that_keeps_its_place(
    hostile, table, file, line_no
):
    """A record over LOOPLINE_MAX_RECORD_BYTES never reaches the raw table: a stub with its
    file, line number and size does, and the quarantine model shows it with its reason."""
    ((reason, raw_record, batch),) = query(
        hostile.settings,
        f"select quarantine_reason, raw_record, _batch_id from quarantine.{table} "
        f"where _file = '{file}' and _line_no = {line_no}",
    )
    assert reason == "oversized_record"
    stub = json.loads(raw_record)
    assert stub == {"stub": "oversized_record", "record_bytes": stub["record_bytes"]}
    assert stub["record_bytes"] > LIMIT and batch == hostile.report.batch_id
    ((longest,),) = query(
        hostile.settings,
        "select max(coalesce(strlen(line), 0)) from (select line from raw.events_lines "
        "union all select line from raw.tickets_lines union all "
        "select customer_ref as line from raw.payments_rows)",
    )
    assert longest <= LIMIT  # no payload over the bound was loaded


def test_the_records_beside_an_oversized_one_load_as_usual(hostile):
    staged = query(
        hostile.settings,
        "select event_id, _line_no from staging.stg_events__viewing_events "
        "where _file like '%T20_big.ndjson' order by _line_no",
    )
    assert staged == [("ev_big_0", 1), ("ev_big_1", 3)]
    payments = query(
        hostile.settings,
        "select _line_no from staging.stg_billing__payments "
        "where _file like '%20260213_big.csv' order by 1",
    )
    assert payments == [(2,), (4,)]
    assert hostile.report.files.oversized == {"events": 1, "payments": 1, "tickets": 1}


# -- wrong encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("events/date=2026-02-13/events_20260213T21_utf16.ndjson",
         "unreadable: not UTF-8 text (byte 0xff at offset 0)"),
        ("tickets/tickets_20260213_latin1.ndjson", "unreadable: not UTF-8 text (byte 0x"),
        ("payments/payments_20260213_bom.csv",
         "not the billing export: unexpected CSV header '\\ufeffpayment_id"),
    ],
    ids=["events in UTF-16", "tickets in Latin-1", "payments with a BOM"],
)  # fmt: skip
def test_a_file_in_another_encoding_is_rejected_with_its_reason(hostile, file, reason):
    ((status, why, records),) = _manifest(hostile, file).values()
    assert (status, records) == ("rejected", 0) and why.startswith(reason), why
    assert (hostile.settings.landing_dir / "_rejected" / file).exists()
    assert _in_raw(hostile, file) == 0


def test_crlf_line_ends_load_cleanly(hostile):
    staged = query(
        hostile.settings,
        "select event_id from staging.stg_events__viewing_events "
        "where _file like '%T22_crlf.ndjson' order by 1",
    )
    assert staged == [("ev_crlf_0",), ("ev_crlf_1",), ("ev_crlf_2",)]


# -- the payment export's columns changed --------------------------------------------------------


@pytest.mark.parametrize("change", ["added", "renamed", "removed"])
def test_a_payment_export_with_other_columns_is_rejected_with_its_header(hostile, change):
    file = f"payments/payments_20260213_{change}.csv"
    ((status, why, _),) = _manifest(hostile, file).values()
    assert status == "rejected"
    assert why.startswith("not the billing export: unexpected CSV header"), why
    assert _in_raw(hostile, file) == 0


# -- the same file twice -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("staged", "quarantined", "file"),
    [
        ("stg_events__viewing_events", "quarantine_events__viewing_events",
         "events/date=2026-02-13/events_20260213T23_again.ndjson"),
        ("stg_billing__payments", "quarantine_billing__payments",
         "payments/payments_20260213_again.csv"),
        ("stg_support__tickets", "quarantine_support__tickets",
         "tickets/tickets_20260213_again.ndjson"),
    ],
    ids=["events", "payments", "tickets"],
)  # fmt: skip
def test_a_file_delivered_again_under_another_name_adds_nothing(hostile, staged, quarantined, file):
    """Every record of the copy is quarantined (a duplicate, or the rule its original failed)."""
    ((status, _, records),) = _manifest(hostile, file).values()
    assert status == "loaded" and records > 0
    ((clean,),) = query(
        hostile.settings, f"select count(*) from staging.{staged} where _file = '{file}'"
    )
    reasons = dict(
        query(
            hostile.settings,
            f"select quarantine_reason, count(*) from quarantine.{quarantined} "
            f"where _file = '{file}' group by 1",
        )
    )
    assert clean == 0 and sum(reasons.values()) == records
    assert reasons["duplicate"] > 0


# -- links out of the landing folder -------------------------------------------------------------


def test_a_link_to_a_file_outside_the_landing_folder_is_rejected_unread(hostile):
    file = "tickets/tickets_20260213_link.ndjson"
    ((status, why, records),) = _manifest(hostile, file).values()
    assert (status, records) == ("rejected", 0)
    assert why == "outside the landing folder: a link to /etc/hostname"
    assert _in_raw(hostile, file) == 0
    moved = hostile.settings.landing_dir / "_rejected" / file
    assert moved.is_symlink() and not (hostile.settings.landing_dir / file).exists()


def test_a_linked_folder_outside_the_landing_folder_is_rejected_unread(hostile):
    rejected = _manifest(hostile, "events/date=2026-03-01/%")
    assert list(rejected) == ["events/date=2026-03-01/events_20260301T00.ndjson"]
    ((status, why, _),) = rejected.values()
    assert status == "rejected" and why.startswith("outside the landing folder: a link to ")
    assert _in_raw(hostile, "events/date=2026-03-01/%") == 0
    # the link was moved aside; what it pointed at is where it was, untouched
    assert (hostile.settings.landing_dir / "_rejected" / "events" / "date=2026-03-01").is_symlink()
    assert (hostile.outside / "events_20260301T00.ndjson").is_file()


# -- files changed after they were loaded --------------------------------------------------------


def test_a_file_changed_after_it_was_loaded_is_rejected_and_reported(hostile):
    """Appended to, or edited in place (same size): the loaded version stays, the changed
    content is moved aside under its hash with the reason, and the ingest reports it."""
    landing = hostile.settings.landing_dir
    assert sorted(Path(rel).name.split(".changed-")[0] for rel in hostile.report.files.changed) == (
        sorted(Path(rel).name for rel in hostile.changed)
    )
    assert "2 changed after load (rejected)" in hostile.report.summary()
    for rel in hostile.changed:
        ((loaded_batch, records),) = query(
            hostile.settings,
            f"select batch_id, records from raw.file_manifest where file_path = '{rel}'",
        )
        assert loaded_batch != hostile.report.batch_id  # the first load's row stands
        assert _in_raw(hostile, rel) == records
        ((key, (status, why, _)),) = _manifest(hostile, f"{rel}.changed-%").items()
        assert status == "rejected" and why.startswith("changed after load: was "), why
        assert (landing / "_rejected" / key).is_file() and not (landing / rel).exists()


# -- nothing lost --------------------------------------------------------------------------------


def test_every_record_of_the_hostile_delivery_is_accounted_for(hostile):
    rows = query(
        hostile.settings,
        "select source_name, landed_records, loaded_records, quarantined_records, "
        "unaccounted_records, rejected_files from monitoring.fct_load_accounting "
        f"where _batch_id = '{hostile.report.batch_id}' order by 1",
    )
    by_source = {source: rest for source, *rest in rows}
    assert all(unaccounted == 0 for _, _, _, unaccounted, _ in by_source.values()), by_source
    # rejected: utf16, outside link, appended (events); bom, 3 headers, edited (payments);
    # latin1, link (tickets)
    assert {source: rest[-1] for source, rest in by_source.items()} == {
        "events": 3, "payments": 5, "tickets": 2,
    }  # fmt: skip
