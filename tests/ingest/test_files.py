"""Loading landed files: many files per transaction, the same rows as file by file, whole files
after a crash, and unreadable files reported rather than raised."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from loopline.ingest import files as loader
from loopline.ingest.files import load_files

LINE_TABLES = ("events_lines", "tickets_lines")
HEADER = ",".join(loader.PAYMENT_COLUMNS)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """A landing folder with awkward files of every source (and two unreadable ones)."""
    root = tmp_path / "landing"
    events = root / "events" / "date=2026-01-01"
    for hour in range(12):
        lines = [f'{{"event_id": "e{hour}-{i}", "n": {i}}}' for i in range(hour * 7)]
        _write(events / f"events_20260101T{hour:02d}.ndjson", ("\n".join(lines) + "\n").encode())
    _write(events / "events_20260101T12.ndjson", b"")  # empty
    _write(events / "events_20260101T13.ndjson", b'{"no": "newline at end"}')
    _write(events / "events_20260101T14.ndjson", b'{"a": 1}\n\n{"b": "caf\xc3\xa9"}\r\n{"trunc')
    _write(events / "events_20260101T15.ndjson", b'{"a": 1}\n{"bad": "\xff"}\n')  # not UTF-8
    _write(root / "tickets" / "tickets_20260101.ndjson", b'{"t": 1}\n{"t": 2}\n')
    rows = [f"py_{i},cus_{i},u{i}@x.com,charge,succeeded,{i}00,EUR,2026-01-01,\n" for i in range(5)]
    _write(root / "payments" / "payments_20260101.csv", (HEADER + "\n" + "".join(rows)).encode())
    _write(root / "payments" / "payments_20260102.csv", (HEADER + "\n" + rows[0]).encode())
    _write(root / "payments" / "payments_20260102_part2.csv", bytes(range(256)) * 4)
    return root


def _load(landing: Path, db: Path, **limits: int) -> tuple[duckdb.DuckDBPyConnection, object]:
    con = duckdb.connect(str(db))
    report = load_files(con, landing, "b1", show_progress=False)
    return con, report


def _contents(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every raw table and the manifest, without load times and batch ids."""
    out = {
        table: con.execute(
            f"select _file, _line_no, line from raw.{table} order by 1, 2"
        ).fetchall()
        for table in LINE_TABLES
    }
    out["payments_rows"] = con.execute(
        "select * exclude (_batch_id, _loaded_at) from raw.payments_rows order by 1, 2"
    ).fetchall()
    out["manifest"] = con.execute(
        "select * exclude (loaded_at, reason, batch_id, mtime_ns) from raw.file_manifest "
        "order by file_path"
    ).fetchall()
    return out


def test_lines_are_the_files_lines_exactly(landing, tmp_path):
    """Each line of each file, numbered from 1, trailing newlines ignored (DuckDB's own split
    is the oracle): a file of newlines only, like an empty one, holds no record."""
    con, report = _load(landing, tmp_path / "wh.duckdb")
    expected = con.execute(
        """
        select filename, generate_subscripts(lines, 1), unnest(lines)
        from (
            select filename, case when rtrim(content, chr(10)) = '' then []::varchar[]
                   else string_split(rtrim(content, chr(10)), chr(10)) end as lines
            from read_text($files)
        )
        """,
        {
            "files": [
                str(p)
                for p in sorted(landing.glob("events/*/*.ndjson"))
                + sorted(landing.glob("tickets/*.ndjson"))
            ]
        },
    ).fetchall()
    got = con.execute(
        "select _file, _line_no, line from raw.events_lines union all "
        "select _file, _line_no, line from raw.tickets_lines"
    ).fetchall()
    expected = [(str(Path(f).relative_to(landing)), n, line) for f, n, line in expected]
    assert sorted(got) == sorted(expected)
    (caf,) = con.execute("select line from raw.events_lines where line like '%caf%'").fetchone()
    assert caf == '{"b": "café"}\r'  # kept as it arrived, carriage return included
    counts = dict(
        con.execute(
            "select file_path, records from raw.file_manifest where status = 'loaded'"
        ).fetchall()
    )
    assert counts["events/date=2026-01-01/events_20260101T00.ndjson"] == 0  # "\n" only
    assert counts["events/date=2026-01-01/events_20260101T12.ndjson"] == 0
    assert counts["events/date=2026-01-01/events_20260101T14.ndjson"] == 4
    assert report.records["events"] == sum(h * 7 for h in range(12)) + 0 + 1 + 4


def test_many_files_per_transaction_give_the_same_rows_as_one_file_at_a_time(
    landing, tmp_path, monkeypatch
):
    together, _ = _load(_copy(landing, tmp_path / "a"), tmp_path / "a.duckdb")
    monkeypatch.setattr(loader, "TXN_FILES", 1)
    monkeypatch.setattr(loader, "CHUNK_FILES", 1)
    one_by_one, _ = _load(_copy(landing, tmp_path / "b"), tmp_path / "b.duckdb")
    assert _contents(together) == _contents(one_by_one)
    assert len(_contents(together)["manifest"]) == 20  # every file, loaded or rejected


def _copy(landing: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(landing, target)
    return target


def test_unreadable_files_are_rejected_and_reported_not_raised(landing, tmp_path, capfd):
    """The simulator's unreadable files: moved aside, recorded, no warning on the terminal."""
    con, report = _load(landing, tmp_path / "wh.duckdb")
    rejected = dict(
        con.execute(
            "select file_path, reason from raw.file_manifest where status = 'rejected'"
        ).fetchall()
    )
    assert (
        sorted(report.rejected)
        == sorted(rejected)
        == [
            "events/date=2026-01-01/events_20260101T15.ndjson",
            "payments/payments_20260102_part2.csv",
        ]
    )
    assert rejected["events/date=2026-01-01/events_20260101T15.ndjson"] == (
        "unreadable: not UTF-8 text (byte 0xff at offset 18)"
    )
    for rel in rejected:
        assert (landing / "_rejected" / rel).exists() and not (landing / rel).exists()
    # nothing of a rejected file reached the raw tables
    (leaked,) = con.execute(
        "select count(*) from raw.events_lines where _file like '%T15%'"
    ).fetchone()
    assert leaked == 0
    out, err = capfd.readouterr()
    assert "UnicodeDecodeError" not in out + err and "Traceback" not in out + err
    assert err == ""


def test_a_file_that_fails_inside_a_transaction_is_found_and_rejected_alone(landing, tmp_path):
    """A CSV whose header is right but whose rows do not parse fails DuckDB's reader: the
    transaction is redone in smaller ones, and only that file is rejected."""
    _write(
        landing / "payments" / "payments_20260101_late.csv",
        (HEADER + '\npy_9,"unterminated,x,y\n').encode(),
    )
    con, report = _load(landing, tmp_path / "wh.duckdb")
    assert "payments/payments_20260101_late.csv" in report.rejected
    assert report.files["payments"] == 2 and report.records["payments"] == 6
    (reason,) = con.execute(
        "select reason from raw.file_manifest where file_path like '%late.csv'"
    ).fetchone()
    assert reason.startswith("unreadable: ") and "\n" not in reason


def test_rerunning_loads_nothing_twice(landing, tmp_path):
    con, first = _load(landing, tmp_path / "wh.duckdb")
    again = load_files(con, landing, "b2", show_progress=False)
    assert again.files == {} and again.rejected == []
    assert first.files["events"] == 15


CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import duckdb
    from loopline.ingest import files as loader

    loader.TXN_FILES, loader.CHUNK_FILES = 4, 2
    calls = 0
    real = loader._record_loaded

    def dying(*args, **kwargs):
        global calls
        calls += 1
        real(*args, **kwargs)
        if calls == int(sys.argv[3]):
            os._exit(3)  # the process dies mid-transaction: no rollback, no clean-up

    loader._record_loaded = dying
    con = duckdb.connect(sys.argv[2])
    loader.load_files(con, Path(sys.argv[1]), "crashed", show_progress=False)
    """
)


@pytest.mark.parametrize("die_at", [1, 3, 8])  # 2 chunks a transaction: in the 1st, 2nd, 4th
def test_a_crash_leaves_whole_files_and_a_rerun_completes_the_load(landing, tmp_path, die_at):
    """Killed mid-load: every file is either wholly loaded with its manifest row or absent;
    the next run loads the rest, and the result equals an uninterrupted load."""
    db = tmp_path / "wh.duckdb"
    run = subprocess.run(
        [sys.executable, "-c", CRASH, str(landing), str(db), str(die_at)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 3, run.stderr
    con = duckdb.connect(str(db))
    loaded = dict(
        con.execute(
            "select file_path, records from raw.file_manifest where status = 'loaded'"
        ).fetchall()
    )
    assert len(loaded) == {1: 0, 3: 4, 8: 12}[die_at]  # the transactions before it committed
    in_raw = dict(
        con.execute(
            "select _file, count(*) from (select _file from raw.events_lines union all "
            "select _file from raw.tickets_lines union all select _file from raw.payments_rows) "
            "group by 1"
        ).fetchall()
    )
    for rel, n in in_raw.items():
        assert loaded.get(rel) == n, rel  # no partial file, no rows without a manifest row
    assert all(in_raw.get(rel, 0) == n for rel, n in loaded.items())
    load_files(con, landing, "rerun", show_progress=False)
    clean, _ = _load(_copy_back(landing, tmp_path), tmp_path / "clean.duckdb")
    assert _contents(con) == _contents(clean)


DIES_BEFORE_THE_MOVE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import duckdb
    from loopline.ingest import files as loader

    def dying(*args, **kwargs):
        os._exit(3)  # the rejected file is recorded; the process dies before moving it

    loader.os.rename = dying
    con = duckdb.connect(sys.argv[2])
    loader.load_files(con, Path(sys.argv[1]), "crashed", show_progress=False)
    """
)


def test_a_crash_between_recording_a_rejected_file_and_moving_it_is_finished_by_the_rerun(
    landing, tmp_path
):
    """The rerun moves the file aside, which it would otherwise leave in the landing
    folder for good (it is in the manifest already), and records it once."""
    db = tmp_path / "wh.duckdb"
    run = subprocess.run(
        [sys.executable, "-c", DIES_BEFORE_THE_MOVE, str(landing), str(db)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 3, run.stderr
    con = duckdb.connect(str(db))
    ((recorded,),) = con.execute(
        "select list(file_path) from raw.file_manifest where status = 'rejected'"
    ).fetchall()
    assert len(recorded) == 1 and (landing / recorded[0]).exists()  # recorded, not moved

    report = load_files(con, landing, "rerun", show_progress=False)
    for rel in ("events/date=2026-01-01/events_20260101T15.ndjson",
                "payments/payments_20260102_part2.csv"):  # fmt: skip
        assert (landing / "_rejected" / rel).exists() and not (landing / rel).exists()
        assert rel in report.rejected
    rows = con.execute(
        "select file_path, batch_id from raw.file_manifest where status = 'rejected' order by 1"
    ).fetchall()
    assert len(rows) == 2 and dict(rows)[recorded[0]] == "crashed"  # once, as first recorded
    clean, _ = _load(_copy_back(landing, tmp_path), tmp_path / "clean.duckdb")
    assert _contents(con) == _contents(clean)


def _copy_back(landing: Path, tmp_path: Path) -> Path:
    """The original landing folder again (the load moved its rejects aside)."""
    import shutil

    target = tmp_path / "again"
    shutil.copytree(landing, target, ignore=shutil.ignore_patterns("_rejected"))
    for moved in (landing / "_rejected").rglob("*"):
        if moved.is_file():
            rel = moved.relative_to(landing / "_rejected")
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(moved, target / rel)
    return target


# -- records over the bound, links, files changed after load (end to end: test_bad_input.py) ----


def test_an_oversized_line_loads_as_a_stub_that_keeps_its_place(landing, tmp_path):
    big = b'{"event_id": "huge", "pad": "' + b"x" * 2000 + b'"}'
    _write(landing / "events" / "date=2026-01-02" / "events_20260102T00.ndjson",
           b'{"a": 1}\n' + big + b'\n{"b": 2}\n')  # fmt: skip
    _write(landing / "tickets" / "tickets_20260102.ndjson", big + b"\n")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    report = load_files(con, landing, "b1", show_progress=False, max_record_bytes=1024)
    rows = con.execute(
        "select _file, _line_no, line, _stub_reason, _record_bytes from raw.events_lines "
        "where _file like '%20260102T00%' union all "
        "select _file, _line_no, line, _stub_reason, _record_bytes from raw.tickets_lines "
        "where _file like '%20260102%' order by 1, 2"
    ).fetchall()
    events = "events/date=2026-01-02/events_20260102T00.ndjson"
    assert rows == [
        (events, 1, '{"a": 1}', None, None),
        (events, 2, None, "oversized_record", len(big)),
        (events, 3, '{"b": 2}', None, None),
        ("tickets/tickets_20260102.ndjson", 1, None, "oversized_record", len(big)),
    ]
    assert report.oversized == {"events": 1, "tickets": 1}
    (records,) = con.execute(
        f"select records from raw.file_manifest where file_path = '{events}'"
    ).fetchone()
    assert records == 3  # the stub is a landed record: the accounting counts it


def test_a_link_inside_the_landing_folder_loads_and_one_outside_is_rejected_unread(
    landing, tmp_path
):
    secret = tmp_path / "secret.ndjson"
    secret.write_bytes(b'{"secret": 1}\n')
    tickets = landing / "tickets"
    (tickets / "tickets_20260102_out.ndjson").symlink_to(secret)
    (tickets / "tickets_20260102_in.ndjson").symlink_to(tickets / "tickets_20260101.ndjson")
    (tickets / "tickets_20260102_broken.ndjson").symlink_to(tickets / "nothing")
    con, _ = _load(landing, tmp_path / "wh.duckdb")
    manifest = dict(
        con.execute(
            "select file_path, status || ': ' || coalesce(reason, '') from raw.file_manifest "
            "where file_path like 'tickets/%'"
        ).fetchall()
    )
    assert manifest == {
        "tickets/tickets_20260101.ndjson": "loaded: ",
        "tickets/tickets_20260102_in.ndjson": "loaded: ",
        "tickets/tickets_20260102_out.ndjson": (
            f"rejected: outside the landing folder: a link to {secret}"
        ),
        "tickets/tickets_20260102_broken.ndjson": (
            "rejected: not a regular file (a folder, a device, a broken link)"
        ),
    }
    (leaked,) = con.execute(
        "select count(*) from raw.tickets_lines where line like '%secret%'"
    ).fetchone()
    assert leaked == 0 and secret.exists()
    assert (landing / "_rejected" / "tickets" / "tickets_20260102_out.ndjson").is_symlink()


def test_a_file_changed_after_load_is_rejected_and_an_untouched_one_is_not(landing, tmp_path):
    """Appended to: rejected (size). Edited in place, same size: rejected (hash). Rewritten
    with the same bytes (a new modification time only): left alone."""
    con, _ = _load(landing, tmp_path / "wh.duckdb")
    before = _contents(con)
    tickets = landing / "tickets" / "tickets_20260101.ndjson"
    tickets.write_bytes(tickets.read_bytes() + b'{"t": 3}\n')
    payments = landing / "payments" / "payments_20260102.csv"
    payments.write_bytes(payments.read_bytes().replace(b"py_0", b"py_9"))
    same = landing / "events" / "date=2026-01-01" / "events_20260101T01.ndjson"
    same.write_bytes(same.read_bytes())
    os.utime(same, ns=(1, 1))
    report = load_files(con, landing, "b2", show_progress=False)
    assert sorted(Path(rel).name.split(".changed-")[0] for rel in report.changed) == [
        "payments_20260102.csv", "tickets_20260101.ndjson"
    ]  # fmt: skip
    assert report.files == {}
    after = _contents(con)
    assert {k: v for k, v in after.items() if k != "manifest"} == {
        k: v for k, v in before.items() if k != "manifest"
    }  # the loaded rows stay
    for rel in report.changed:
        (status, reason) = con.execute(
            f"select status, reason from raw.file_manifest where file_path = '{rel}'"
        ).fetchone()
        assert status == "rejected" and reason.startswith("changed after load: was ")
        assert (landing / "_rejected" / rel).is_file()
    assert same.exists()
    again = load_files(con, landing, "b3", show_progress=False)
    assert again.changed == [] and again.rejected == []


# -- a landed path swapped after the scan: what loads is what was checked and hashed ----------


def test_a_file_swapped_for_a_link_after_the_scan_is_refused_unread(landing, tmp_path, monkeypatch):
    """`scan` found regular files; before they are read, one becomes a link to a file outside
    the landing folder and a dated folder becomes a link to a folder outside. Neither target
    is read: both are rejected with the reason, and no raw row holds the outside content."""
    outside = tmp_path / "outside"
    _write(outside / "secret.ndjson", b'{"secret": "outside-1"}\n')
    _write(outside / "day" / "events_20260101T00.ndjson", b'{"secret": "outside-2"}\n')
    ticket = landing / "tickets" / "tickets_20260101.ndjson"
    day = landing / "events" / "date=2026-01-01"
    real_scan = loader.scan

    def scan_then_swap(con, root, source):  # type: ignore[no-untyped-def]
        found = real_scan(con, root, source)
        if source.name == "tickets":
            ticket.unlink()
            ticket.symlink_to(outside / "secret.ndjson")
        if source.name == "events":
            day.rename(tmp_path / "moved-day")
            day.symlink_to(outside / "day", target_is_directory=True)
        return found

    monkeypatch.setattr(loader, "scan", scan_then_swap)
    con, _ = _load(landing, tmp_path / "wh.duckdb")
    for table in LINE_TABLES:
        (n,) = con.execute(
            f"select count(*) from raw.{table} where line like '%outside-%'"
        ).fetchone()
        assert n == 0, table
    reasons = dict(
        con.execute(
            "select file_path, reason from raw.file_manifest where status = 'rejected'"
        ).fetchall()
    )
    assert reasons["tickets/tickets_20260101.ndjson"].startswith("outside the landing folder")
    swapped = "events/date=2026-01-01/events_20260101T00.ndjson"
    assert reasons[swapped].startswith("outside the landing folder"), reasons
    assert (outside / "secret.ndjson").read_bytes() == b'{"secret": "outside-1"}\n'


def test_what_loads_is_the_content_that_was_hashed(landing, tmp_path, monkeypatch):
    """A payment export and a catalogue page rewritten on disk just after they were read and
    hashed: the rows loaded are the hashed content (DuckDB never reads the landed path)."""
    import hashlib
    import json

    page = landing / "catalogue" / "shows" / "batch=b0" / "page_0001.json"
    original_page = {
        "entity": "shows", "batch_id": "b0", "extracted_at": "2026-01-01T00:00:00Z",
        "body": {"data": [{"show_id": 1, "title": "Before"}]},
    }  # fmt: skip
    _write(page, json.dumps(original_page).encode())
    export = landing / "payments" / "payments_20260102.csv"
    before = {export: export.read_bytes(), page: page.read_bytes()}
    real_inspect = loader.inspect

    def inspect_then_rewrite(path, root, check):  # type: ignore[no-untyped-def]
        landed = real_inspect(path, root, check)
        if path in before:
            path.write_bytes(before[path].replace(b"py_0", b"py_X").replace(b"Before", b"After!"))
        return landed

    monkeypatch.setattr(loader, "inspect", inspect_then_rewrite)
    con, _ = _load(landing, tmp_path / "wh.duckdb")
    assert con.execute(
        "select payment_id from raw.payments_rows where _file = 'payments/payments_20260102.csv'"
    ).fetchall() == [("py_0",)]
    (item,) = con.execute("select * from raw.catalogue_items").fetchall()
    assert "Before" in str(item) and "After!" not in str(item)
    for path, data in before.items():
        rel = str(path.relative_to(landing))
        (sha,) = con.execute(
            "select sha256 from raw.file_manifest where file_path = ?", [rel]
        ).fetchone()
        assert sha == hashlib.sha256(data).hexdigest()


# -- the continuous loader ----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_follower_loads_what_lands_between_passes_as_load_files_would(landing, tmp_path):
    """Pass after pass, new files (good, unreadable, oversized, links out) load or are
    rejected as `load_files` does them, each once; a file changed after load is found by the
    next full pass; the rows and manifest equal one `load_files` of the same folder."""
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    clock = _Clock()
    follower = loader.Follower(con, landing, max_record_bytes=1024, clock=clock)
    first = follower.load("b1")  # a full pass: everything there
    assert first.files == {"events": 15, "payments": 2, "tickets": 1}
    assert follower.load("b2").files == {}  # nothing new: nothing loaded again
    events = landing / "events" / "date=2026-01-02"
    _write(events / "events_20260102T00.ndjson", b'{"a": 1}\n' + b"x" * 2000 + b"\n")
    _write(events / "events_20260102T01.ndjson", b'{"bad": "\xff"}\n')  # not UTF-8
    _write(events / ".events_20260102T02.ndjson.tmp", b'{"half": ')  # a dot-name: ignored
    (events / "events_20260102T03.ndjson").symlink_to(tmp_path / "elsewhere.ndjson")
    second = follower.load("b3")
    assert second.files == {"events": 1} and second.records == {"events": 2}
    assert second.oversized == {"events": 1}
    assert sorted(Path(rel).name for rel in second.rejected) == [
        "events_20260102T01.ndjson", "events_20260102T03.ndjson"
    ]  # fmt: skip
    assert follower.load("b4").files == {} and follower.load("b4").rejected == []

    tickets = landing / "tickets" / "tickets_20260101.ndjson"
    tickets.write_bytes(tickets.read_bytes() + b'{"t": 3}\n')  # changed after load
    assert follower.load("b5").changed == []  # not a full pass yet
    clock.now += follower.full_every_s
    assert [Path(rel).name.split(".changed-")[0] for rel in follower.load("b6").changed] == [
        "tickets_20260101.ndjson"
    ]

    (tmp_path / "again").mkdir()
    for path in landing.rglob("*"):  # the same files as they were, in one load_files
        if path.is_file() and "_rejected" not in path.parts and path.name != tickets.name:
            target = tmp_path / "again" / path.relative_to(landing)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    other = duckdb.connect(str(tmp_path / "other.duckdb"))
    load_files(other, tmp_path / "again", "b1", show_progress=False, max_record_bytes=1024)
    mine, theirs = _contents(con), _contents(other)
    assert mine["events_lines"] == theirs["events_lines"]
    assert mine["payments_rows"] == theirs["payments_rows"]
    loaded = [row for row in mine["manifest"] if row[4] == "loaded" and row[1] != "tickets"]
    assert loaded == [row for row in theirs["manifest"] if row[4] == "loaded"]
