"""Settings, read once from the environment (prefix AISC_). Each has a default and a help text."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AISC_", extra="ignore")

    home: Path = Field(
        default=Path(".aisc"),
        description="Directory for the SQLite database, job logs and exports.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to SQLite at HOME/aisc.db. "
        "Use postgresql+psycopg://user@host:5432/db for production.",
    )
    inventory: str = Field(
        default="2x8xH800",
        description="Nodes of the local executor: COUNTxGPUSxMODEL or NAMExGPUSxMODEL, "
        "comma-separated. Real GPUs found by nvidia-smi take precedence.",
    )
    detect_gpus: bool = Field(
        default=True, description="Look for real GPUs with nvidia-smi for the local executor."
    )
    controller_interval_s: float = Field(
        default=0.5, description="Seconds between controller cycles."
    )
    kill_grace_s: float = Field(
        default=2.0, description="Seconds between SIGTERM and SIGKILL when a job is stopped."
    )
    host: str = Field(default="127.0.0.1", description="Address `aisc serve` listens on.")
    port: int = Field(default=8000, description="Port `aisc serve` listens on.")
    url: str = Field(default="http://127.0.0.1:8000", description="Server URL the CLI talks to.")
    token: str | None = Field(default=None, description="API token the CLI sends.")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'aisc.db').resolve()}"


def get_settings() -> Settings:
    return Settings()
