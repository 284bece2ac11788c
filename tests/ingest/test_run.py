"""`loopline ingest` under contention and outages: two runs queue on the catalogue cursor (the
waiter says who holds it), and a catalogue outage holds back no other source."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from loopline.ingest.catalogue import ExtractError, extract_catalogue
from loopline.ingest.run import SourceFailedError, ingest
from loopline.settings import Settings
from loopline.simulate.run import catalogue_dir
from loopline.simulate.vendor_api import ApiBehaviour, CatalogueServer
from tests.conftest import copy_company, query

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from loopline.ingest.catalogue.cursor import exclusive
    from loopline.settings import Settings

    folder = Path(sys.argv[2])
    with exclusive(Settings(data_dir=Path(sys.argv[1]))):
        (folder / "held").touch()
        while not (folder / "release").exists():
            time.sleep(0.05)
    """
)


def _until(found: Callable[[], bool], what: str, limit_s: float = 240.0) -> None:
    """Wait for `found()` (a generous limit keeps a broken test from hanging)."""
    deadline = time.monotonic() + limit_s
    while not found():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


@contextmanager
def holding(data_dir: Path, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the catalogue cursor's lock of `data_dir` until the block ends."""
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), str(folder)])
    try:
        _until(lambda: (folder / "held").exists() or process.poll() is not None, "the holder")
        assert process.poll() is None, "the holder did not take the lock"
        yield process
    finally:
        (folder / "release").touch()
        process.wait(timeout=60)


def test_a_second_ingest_queues_for_the_catalogue_cursor_and_says_who_holds_it(small_sim, tmp_path):
    """Two real processes: a `loopline ingest` started while another extraction holds the
    cursor waits for it (naming its pid), then extracts and loads as usual."""
    settings = copy_company(small_sim[0], tmp_path / "data")
    folder = tmp_path / "holder"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))}
    env.update(LOOPLINE_DATA_DIR=str(settings.data_dir), LOOPLINE_PROGRESS="quiet")
    output = tmp_path / "ingest.out"
    with (
        holding(settings.data_dir, folder) as process,
        CatalogueServer(catalogue_dir(settings)) as vendor,
        output.open("wb") as sink,
    ):
        second = subprocess.Popen(
            [sys.executable, "-m", "loopline.cli", "ingest", "--quiet",
             "--catalogue-url", vendor.url],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _until(
                lambda: (
                    "waiting for the catalogue cursor" in output.read_text()
                    or second.poll() is not None
                ),
                "the second ingest to wait",
            )
            waiting = output.read_text()
            assert second.poll() is None, waiting  # today's main: fails at once
            assert f"pid {process.pid} (" in waiting, waiting
            (folder / "release").touch()
            assert second.wait(timeout=600) == 0, output.read_text()
        finally:
            if second.poll() is None:
                second.kill()
    done = output.read_text()
    assert "catalogue API pages landed: 12" in done, done
    ((pages,),) = query(
        settings, "select count(*) from raw.file_manifest where source = 'catalogue'"
    )
    assert pages == 12


def test_an_extraction_gives_up_after_the_lock_timeout_naming_the_holder(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", lock_timeout=0.5)
    with (
        holding(settings.data_dir, tmp_path / "holder") as process,
        pytest.raises(
            ExtractError, match=rf"pid {process.pid} \(.*\) since .* has held the catalogue cursor"
        ),
    ):
        extract_catalogue(settings, "http://127.0.0.1:9")  # never asked: the lock comes first


# -- a catalogue outage --------------------------------------------------------------------------


def test_a_catalogue_outage_loads_every_other_source_then_says_which_failed(small_sim, tmp_path):
    """The vendor answers 500/503 to everything: OLTP tables and landed files load, the error
    names the catalogue, and the next ingest with the vendor back extracts it."""
    settings = copy_company(small_sim[0], tmp_path / "data").model_copy(
        update={"catalogue_max_attempts": 2}
    )
    broken = ApiBehaviour(failure_rate=1.0)
    with (
        CatalogueServer(catalogue_dir(settings), behaviour=broken) as vendor,
        pytest.raises(SourceFailedError) as failed,
    ):
        ingest(settings, catalogue_url=vendor.url, progress=False)
    report = failed.value.report
    assert list(report.failed) == ["catalogue"]
    assert str(failed.value).startswith(f"catalogue: GET {vendor.url}/v1/shows failed 2 times")
    assert report.batch_id in str(failed.value)
    assert sorted(report.oltp_tables) == ["plan_prices", "plans", "subscriptions", "users"]
    assert report.files.files["events"] > 1000 and report.files.records["payments"] > 0
    assert report.catalogue_pages == 0 and "catalogue FAILED" in report.summary()
    ((events,),) = query(settings, "select count(*) from raw.events_lines")
    assert events == report.files.records["events"]
    with CatalogueServer(catalogue_dir(settings)) as vendor:
        again = ingest(settings, catalogue_url=vendor.url, progress=False)
    assert again.catalogue_pages == 12 and again.files.files == {"catalogue": 12}


def test_the_cli_reports_a_catalogue_outage_in_one_line_after_loading_the_rest(small_sim, tmp_path):
    settings = copy_company(small_sim[0], tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))}
    env.update(LOOPLINE_DATA_DIR=str(settings.data_dir), LOOPLINE_CATALOGUE_MAX_ATTEMPTS="1")
    with CatalogueServer(
        catalogue_dir(settings), behaviour=ApiBehaviour(failure_rate=1.0)
    ) as vendor:
        done = subprocess.run(
            [sys.executable, "-m", "loopline.cli", "ingest", "--quiet",
             "--catalogue-url", vendor.url],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: catalogue: GET "), output
    assert "the other sources were loaded in batch" in output, output
    ((tables,),) = query(settings, "select count(*) from raw.oltp_loads")
    assert tables == 4
