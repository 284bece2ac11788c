"""A poisoned batch: set aside as stubs (the build goes through, the accounting balances), then
replayed (its files load again), both from the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.dbt import run_dbt
from loopline.settings import get_settings
from loopline.simulate.run import catalogue_dir
from loopline.simulate.vendor_api import CatalogueServer
from tests.conftest import copy_company, ingest_simulated, query
from tests.ingest.test_bad_input import _clean_events

runner = CliRunner()
# each case and its outcome goes into docs/reliability.md (`python -m loopline.reliability`)
pytestmark = pytest.mark.reliability("bad_input")
POISON = "events/date=2026-02-13/events_20260213T21_poison.ndjson"
UNREADABLE = "events/date=2026-02-13/events_20260213T22_utf16.ndjson"  # rejected in the batch


def _accounting(settings, batch_id: str) -> tuple[int, int, int, int] | None:
    rows = query(
        settings,
        "select landed_records, loaded_records, quarantined_records, unaccounted_records "
        f"from monitoring.fct_load_accounting where source_name = 'events' "
        f"and _batch_id = '{batch_id}'",
    )
    return rows[0] if rows else None


def test_a_poisoned_batch_is_set_aside_then_replayed(built_warehouse, tmp_path, monkeypatch):
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    (settings.landing_dir / POISON).parent.mkdir(parents=True, exist_ok=True)
    (settings.landing_dir / POISON).write_text("\n".join(_clean_events(settings, "poison")) + "\n")
    (settings.landing_dir / UNREADABLE).write_text("not UTF-8\n", encoding="utf-16")
    batch = ingest_simulated(settings).batch_id
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()

    aside = runner.invoke(app, ["ingest", "--quarantine-batch", batch])
    assert aside.exit_code == 0, aside.output
    assert f"set 3 records of batch {batch} aside" in aside.output
    run_dbt(settings, ["build"])
    quarantined = query(
        settings,
        "select quarantine_reason, raw_record from quarantine.quarantine_events__viewing_events "
        f"where _file = '{POISON}'",
    )
    assert [reason for reason, _ in quarantined] == ["quarantined_batch"] * 3
    assert all(
        '"record_bytes":' in record and "ev_poison" not in record for _, record in quarantined
    )
    assert _accounting(settings, batch) == (3, 0, 3, 0)
    assert (settings.landing_dir / POISON).exists()  # the landed file is untouched

    with CatalogueServer(catalogue_dir(settings)) as vendor:
        replay = runner.invoke(
            app, ["ingest", "--quiet", "--replay-batch", batch, "--catalogue-url", vendor.url]
        )
    assert replay.exit_code == 0, replay.output
    assert f"released 2 files of batch {batch} (3 raw records, 1 moved back" in replay.output
    run_dbt(settings, ["build", "--full-refresh"])
    ((again,),) = query(
        settings, f"select batch_id from raw.file_manifest where file_path = '{POISON}'"
    )
    assert again != batch and _accounting(settings, again) == (3, 3, 0, 0)
    ((status, rejected_in),) = query(
        settings,
        f"select status, batch_id from raw.file_manifest where file_path = '{UNREADABLE}'",
    )
    assert (status, rejected_in) == ("rejected", again)  # tried again, still unreadable
    assert (settings.landing_dir / "_rejected" / UNREADABLE).is_file()
    assert _accounting(settings, batch) is None
    staged = query(
        settings,
        f"select event_id from staging.stg_events__viewing_events where _file = '{POISON}' order by 1",
    )
    assert staged == [("ev_poison_0",), ("ev_poison_1",), ("ev_poison_2",)]


@pytest.mark.parametrize("option", ["--quarantine-batch", "--replay-batch"])
def test_an_unknown_batch_is_a_one_line_error(built_warehouse, tmp_path, monkeypatch, option):
    settings = copy_company(built_warehouse[0], tmp_path / "data")
    monkeypatch.setenv("LOOPLINE_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    result = runner.invoke(app, ["ingest", option, "20990101T000000Z-nope"])
    assert result.exit_code == 2, result.output
    assert "no landed file was loaded in batch '20990101T000000Z-nope'" in result.output
