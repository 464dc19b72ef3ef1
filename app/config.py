from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the API, the ingest and the CLI; read from SWAPFLEET_* variables."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLEET_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # None means "start an embedded PostgreSQL" for `swapfleet up`; everything else requires it.
    database_url: str | None = None
    mqtt_url: str | None = None
    mqtt_topic_prefix: str = "swapfleet/v1"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    data_dir: Path = Path(".swapfleet")
    # Batteries below this state of health are never handed to a driver.
    swap_min_soh_pct: float = Field(default=70.0, ge=0, le=100)
    page_size_max: int = Field(default=500, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _require_database_outside_development(self) -> "Settings":
        if self.environment == "production" and not self.database_url:
            raise ValueError("SWAPFLEET_DATABASE_URL must be set in production")
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
