from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from devices.contract import MqttProtocol


class Settings(BaseSettings):
    """Every setting of the API, the ingest and the CLI; read from SWAPFLEET_* variables."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLEET_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # None means "start an embedded PostgreSQL" for `swapfleet up`; everything else requires it.
    database_url: str | None = None
    mqtt_url: str | None = None
    # The MQTT version the ingest and the simulator speak. "3.1.1" is for brokers without
    # MQTT 5, such as the embedded demo broker of `swapfleet up`: no shared subscriptions, no
    # session expiry, and the broker, not ingest_receive_maximum, bounds what is in flight.
    mqtt_protocol: MqttProtocol = "5"
    mqtt_topic_prefix: str = "swapfleet/v1"
    # Where `swapfleet devices provision` writes Mosquitto's credentials and ACL.
    mqtt_passwd_file: Path = Path("deploy/mosquitto/passwd")
    mqtt_acl_file: Path = Path("deploy/mosquitto/acl")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = "http://127.0.0.1:8000"
    # Processes serving the API (`swapfleet api --workers`); None: one per CPU this process
    # may run on.
    api_workers: int | None = Field(default=None, ge=1)
    # How long a process trusts an API key it has checked without asking the database again:
    # a revoked key keeps working for at most this long (0: check every request).
    api_key_cache_ttl_s: float = Field(default=5.0, ge=0)
    api_key: str | None = None
    data_dir: Path = Path(".swapfleet")
    # Batteries below this state of health are never handed to a driver.
    swap_min_soh_pct: float = Field(default=70.0, ge=0, le=100)
    # How often each API process adds committed swaps to the report aggregates (0: never; the
    # OEM swap counts stay exact either way, battery_daily's swap columns lag by about this).
    swap_rollup_interval_s: float = Field(default=5.0, ge=0)
    page_size_max: int = Field(default=500, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"
    # Shifts the clock the code asks for "now" (app/core/clock.py) by this many seconds: for running
    # the tests at chosen dates, refused in production.
    clock_offset_s: float = 0.0

    # ---- MQTT ingest (app/ingest) ----
    # A stable client id is what makes the broker keep our session (and its queue) across
    # restarts; every ingest process of one deployment needs its own.
    ingest_client_id: str = "swapfleet-ingest"
    # Set to share the stream among several ingest processes ($share/<group>/...).
    ingest_share_group: str | None = None
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    # Unacknowledged messages the broker may have in flight to us: bounds the ingest's memory
    # and must exceed a batch, since a batch is acknowledged only after its commit.
    ingest_receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    ingest_batch_max_records: int = Field(default=10_000, ge=1)
    ingest_batch_window_s: float = Field(default=0.2, gt=0)
    ingest_max_payload_bytes: int = Field(default=512 * 1024, ge=1)
    ingest_max_future_skew_s: float = Field(default=300.0, ge=0)
    ingest_dead_letter_payload_bytes: int = Field(default=4096, ge=0)
    # Samples of one battery in one slot further apart than this start a new charging session.
    ingest_session_gap_s: float = Field(default=600.0, gt=0)
    # A record is checked against where its battery was around its ts, give or take this
    # much: device clocks and the swap times operators record disagree by minutes.
    ingest_custody_grace_s: float = Field(default=600.0, ge=0)
    ingest_metrics_port: int | None = 9101
    ingest_retry_max_s: float = Field(default=5.0, gt=0)
    # Fault injection for the tests of the ingest's recovery from a writer process that dies
    # on a message (app/ingest/client.py): the writer aborts on a payload containing this.
    # Nothing else can make it die on purpose; refused outside the test environment.
    ingest_test_abort_marker: str | None = None
    # Retention per record kind; whole monthly partitions older than this are dropped.
    retention_charging_days: int = Field(default=400, ge=1)
    retention_health_days: int = Field(default=3650, ge=1)
    retention_capacity_days: int = Field(default=3650, ge=1)
    retention_vehicle_days: int = Field(default=400, ge=1)
    partitions_ahead_months: int = Field(default=3, ge=1)
    # How often a running ingest drops expired partitions and creates future ones.
    prune_interval_s: float = Field(default=3600.0, gt=0)

    # ---- OCPP 2.1 gateway (app/ocpp, docs/ocpp.md) ----
    # The interval BootNotification tells a station to send Heartbeats at.
    ocpp_heartbeat_interval_s: int = Field(default=60, ge=1)
    # A station's connection lease (ocpp_connections): renewed by its gateway every third of
    # this; a gateway that died frees its stations once their leases run out.
    ocpp_lease_s: float = Field(default=90.0, gt=0)
    # A larger message is answered with a CALLERROR (FormatViolation) and not parsed.
    ocpp_max_message_bytes: int = Field(default=65_536, ge=1024)
    # Security profile 1 (HTTP Basic over plain ws://) is for development and tests only: with
    # SWAPFLEET_ENVIRONMENT=production a station must connect over wss:// (profile 2), TLS at
    # uvicorn or at a proxy it trusts (X-Forwarded-Proto). See docs/ocpp.md.

    # ---- OEM reports (app/reports) ----
    # A report without `from` covers this many days up to and including `to`.
    report_window_days: int = Field(default=90, ge=1, le=3660)
    # Robust z-score (0.6745 (x - median) / MAD within a cohort) above which a battery is
    # listed as an anomaly and recommended for quarantine.
    report_anomaly_z: float = Field(default=3.5, gt=0)
    # Smaller cohorts (same OEM and pack type) have no meaningful median: no anomalies.
    report_anomaly_min_cohort: int = Field(default=5, ge=3)
    # A fleet summary serves a window's anomalies and energy charged from a snapshot this
    # young without checking for newer data (0: check every time). Under live ingest the
    # current month changes with every batch: without it every summary would recompute.
    report_snapshot_max_age_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _require_database_outside_development(self) -> "Settings":
        if self.environment == "production" and not self.database_url:
            raise ValueError("SWAPFLEET_DATABASE_URL must be set in production")
        if self.environment == "production" and self.clock_offset_s:
            raise ValueError("SWAPFLEET_CLOCK_OFFSET_S is for tests; it must be 0 in production")
        if self.ingest_test_abort_marker and self.environment != "test":
            raise ValueError("SWAPFLEET_INGEST_TEST_ABORT_MARKER is for the test environment only")
        return self

    def sqlalchemy_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "SWAPFLEET_DATABASE_URL is not set (only `swapfleet up` starts an embedded one)"
            )
        return normalize_database_url(self.database_url)


def normalize_database_url(url: str) -> str:
    """Accept the libpq form users paste (postgresql://) and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
