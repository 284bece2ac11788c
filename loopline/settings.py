"""One settings class for the whole project (environment variables prefixed ``LOOPLINE_``).

Every default works on a laptop with no server: DuckDB warehouse, SQLite source
database, local MLflow store, all under one git-ignored data folder. Paths are
derived lazily from ``data_dir`` so nothing is computed at import time.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scale = Literal["small", "demo", "large"]
ENV_PREFIX = "LOOPLINE_"


class Settings(BaseSettings):
    """Where loopline reads and writes, and how hard it may push the machine."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # -- storage -----------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Root of every generated file.")
    warehouse_path: Path | None = Field(
        None, description="DuckDB file; default <data_dir>/warehouse/loopline.duckdb."
    )
    source_db_url: str | None = Field(
        None,
        description="OLTP source database. Default: SQLite file under <data_dir>/sources. "
        "A postgresql://... URL writes and reads Postgres instead.",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="Default: sqlite:///<data_dir>/mlflow/mlflow.db."
    )
    online_store_url: str | None = Field(
        None, description="redis://... to serve features from Redis."
    )

    # -- streaming (`loopline stream`, `loopline produce`) ----------------------------
    stream_url: str | None = Field(
        None,
        description="redis://host:port/db: consume viewing events from a Redis stream with a "
        "consumer group. Unset: tail the embedded NDJSON spool file (no server needed).",
    )
    stream_spool_path: Path | None = Field(
        None, description="The embedded stream: default <data_dir>/stream/spool.ndjson."
    )
    stream_batch_events: int = Field(
        500, ge=1, description="Events per micro-batch at a steady rate (a landed file each)."
    )
    stream_batch_max_events: int = Field(
        20_000,
        ge=1,
        description="The most a micro-batch grows to while the consumer catches up on a spike.",
    )
    stream_batch_seconds: float = Field(
        2.0, gt=0, description="The longest an event waits in a micro-batch before it lands."
    )

    dbt_project_dir: Path | None = Field(
        None, description="Folder with dbt_project.yml; default: the repo root."
    )
    ml_config: Path | None = Field(
        None, description="ML configuration (training, gate, promotion); default conf/ml.yaml."
    )
    monitoring_config: Path | None = Field(
        None, description="Monitoring rules, drift and retraining; default conf/monitoring.yaml."
    )

    # -- warehouse resources -------------------------------------------------------
    duckdb_threads: int = Field(2, ge=1, description="Threads DuckDB gives one query.")
    dbt_threads: int = Field(
        1,
        ge=1,
        description="Models dbt runs at once. Each DuckDB query already uses every "
        "`duckdb_threads`, and every model shares one memory limit, so two heavy marts at "
        "once gain nothing on a small machine and can run out of memory together.",
    )
    duckdb_memory_limit: str = Field("8GB")

    # -- partitioned batch scoring (`loopline score --partitions N`; flows/score.py) -------
    dask_address: str | None = Field(
        None,
        description="tcp://host:8786: score churn partitions on this Dask scheduler. Unset: "
        "a temporary LocalCluster when more than one partition is asked for.",
    )
    score_stage_dir: Path | None = Field(
        None,
        description="Where partitioned scoring stages feature and prediction parts; default "
        "<data_dir>/scoring. With a remote Dask scheduler, a folder every worker sees at the "
        "same path (a shared mount).",
    )

    # -- catalogue API --------------------------------------------------------------
    catalogue_url: str | None = Field(
        None,
        description="The catalogue API ingest extracts from; default: the simulated vendor "
        "at http://<catalogue_host>:<catalogue_port>.",
    )
    catalogue_max_attempts: int = Field(
        8,
        ge=1,
        description="Tries per catalogue API request before ingest gives up on the API "
        "(and loads the other sources without it).",
    )
    catalogue_max_page_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="Largest catalogue API answer (one page) ingest reads; a larger one stops "
        "the extraction with an error naming the page, and nothing of it is landed.",
    )
    # where `loopline catalogue-api` (and `loopline up`) serve the simulated vendor
    catalogue_host: str = "127.0.0.1"
    catalogue_port: int = Field(8765, ge=0, le=65535)

    # -- ingest ------------------------------------------------------------------------
    max_record_bytes: int = Field(
        4 << 20,
        ge=1024,
        description="Largest landed record (an NDJSON line, a CSV row) ingest loads; a larger "
        "one is quarantined as a stub that keeps its file, line number and size.",
    )
    lock_timeout: float = Field(
        1800.0,
        gt=0,
        description="Seconds a run waits for another to release a lock (the catalogue "
        "cursor) before it gives up, saying who holds it.",
    )

    # -- simulator -------------------------------------------------------------------
    sim_seed: int = 42
    sim_start: date = date(2026, 1, 1)
    sim_scale: Scale = Field(
        "demo", description="small (tests), demo (minutes), large (>10M events)."
    )

    # -- local services (`loopline up`), all on 127.0.0.1 ------------------------------
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect server and UI.")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow UI.")
    docs_port: int = Field(8080, ge=1, le=65535, description="dbt docs site.")
    api_port: int = Field(8000, ge=1, le=65535, description="The serving API.")
    service_start_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a local service (the Prefect server above all) may take to "
        "answer: a first start on a fresh virtualenv (database migrations, nothing "
        "byte-compiled) on a busy 2-core machine has taken 85 s.",
    )

    # -- push: new landed files trigger the line (loopline/push/) ----------------------
    ingest_token: str | None = Field(
        None,
        description="Bearer token of POST /v1/ingest/events; unset: the webhook refuses "
        "every request (503).",
    )
    ingest_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest body POST /v1/ingest/events accepts."
    )
    push_quiet_seconds: float = Field(
        3.0,
        gt=0,
        description="The landing watcher announces new files once none arrived for this "
        "long, so a burst of files triggers one line run.",
    )
    push_max_wait_seconds: float = Field(
        60.0, gt=0, description="... but never later than this after the first new file."
    )

    # -- serving API limits and access (`loopline serve`; docs/reliability.md#api) ----------
    api_max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request body the API reads; a larger one is answered 413 before "
        "it is read (by Content-Length, or as soon as the streamed body passes the limit).",
    )
    api_max_batch_rows: int = Field(
        1000,
        ge=1,
        description="Most rows one POST /v1/churn/score/batch request may ask to score; more "
        "is answered 422 (the body limit above applies too).",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token the API requires on endpoints that write, trigger work or "
        "reveal internals (and on every endpoint but /healthz when "
        "LOOPLINE_API_TOKEN_REQUIRED_FOR_READS is true). Unset: those endpoints are open, "
        "which is safe only on loopback (the default bind).",
    )
    api_token_required_for_reads: bool = Field(
        False, description="Also require LOOPLINE_API_TOKEN for scoring and recommendations."
    )
    prediction_log_max_file_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Size at which a prediction-log file rotates."
    )
    prediction_log_keep_files: int = Field(
        64, ge=1, description="Prediction-log files kept (the oldest are deleted first)."
    )
    prediction_log_keep_days: int = Field(
        30, ge=1, description="Days of prediction-log folders kept (older ones are deleted)."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # -- derived locations -----------------------------------------------------------
    @property
    def sources_dir(self) -> Path:
        """Where the simulated company's own systems keep their data."""
        return self.data_dir / "sources"

    @property
    def landing_dir(self) -> Path:
        """Immutable file drops (events, payments, tickets) and raw API pages."""
        return self.data_dir / "landing"

    @property
    def sim_state_dir(self) -> Path:
        """Simulator state that lets `simulate --until` continue where it stopped."""
        return self.data_dir / "sim_state"

    @property
    def state_dir(self) -> Path:
        """Extractor cursors and other small bookkeeping that must survive restarts."""
        return self.data_dir / "state"

    @property
    def source_sqlite_path(self) -> Path:
        return self.sources_dir / "oltp.sqlite"

    @property
    def resolved_source_db_url(self) -> str:
        return self.source_db_url or f"sqlite:///{self.source_sqlite_path}"

    @property
    def resolved_warehouse_path(self) -> Path:
        return self.warehouse_path or self.data_dir / "warehouse" / "loopline.duckdb"

    @property
    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def resolved_catalogue_url(self) -> str:
        host = f"[{self.catalogue_host}]" if ":" in self.catalogue_host else self.catalogue_host
        return self.catalogue_url or f"http://{host}:{self.catalogue_port}"

    @property
    def stream_dir(self) -> Path:
        """The stream consumer's spool offset and metrics (`metrics.json`)."""
        return self.data_dir / "stream"

    @property
    def resolved_stream_spool_path(self) -> Path:
        return self.stream_spool_path or self.stream_dir / "spool.ndjson"

    @property
    def resolved_score_stage_dir(self) -> Path:
        return self.score_stage_dir or self.data_dir / "scoring"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


def describe_error(exc: ValidationError) -> str:
    """One line per bad setting: the environment variable, the value given, what is accepted.

    e.g. ``LOOPLINE_SIM_SCALE='huge': should be 'small', 'demo' or 'large'``.
    """
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "?"
        name = f"{ENV_PREFIX}{field.upper()}"
        expected = str(error.get("msg", "invalid")).removeprefix("Input should be ")
        expected = expected.split(", unable to")[0]  # "a valid integer, unable to parse ..."
        given = error.get("input")
        lines.append(f"{name}={given!r}: should be {expected}")
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own `Settings`)."""
    return Settings()
