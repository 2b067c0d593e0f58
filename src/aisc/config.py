"""Settings, read once from the environment (prefix AISC_). Each has a default and a help text."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aisc.scheduler.config import MAX_WEIGHT, PolicyConfig, PriorityWeights, preset

# Numbers the runtime waits on, divides by or adds to dates must be finite and in range:
# a NaN, infinite or negative interval would stop the controller's thread or a sign-in.
DAY_S = 86_400


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
        default=0.5,
        gt=0,
        le=DAY_S,
        allow_inf_nan=False,
        description="Seconds between controller cycles.",
    )
    kill_grace_s: float = Field(
        default=2.0,
        ge=0,
        le=DAY_S,
        allow_inf_nan=False,
        description="Seconds between SIGTERM and SIGKILL when a job is stopped.",
    )
    policy: str = Field(
        default="aisc",
        description="Scheduling policy: aisc (multifactor fair share, EASY backfill, borrowing "
        "with preemption), backfill (FIFO with EASY backfill) or fifo (strict order).",
    )
    priority_weights: str = Field(
        default="age=1000,fairshare=10000,size=1000,qos=2000",
        description="Weights of the multifactor priority's factors, each factor in [0, 1].",
    )
    max_age_s: float = Field(
        default=7 * 86400,
        gt=0,
        allow_inf_nan=False,
        description="A job's age factor saturates after this many seconds.",
    )
    usage_half_life_s: float = Field(
        default=7 * 86400,
        gt=0,
        allow_inf_nan=False,
        description="Fair-share usage halves over this many seconds.",
    )
    fairshare_by_org: bool = Field(
        default=False,
        description="Fair share in two levels: a busy organisation's projects all rank lower.",
    )
    reservations: int = Field(
        default=1,
        ge=0,
        description="How many blocked jobs get a reserved start for backfill (1: EASY).",
    )
    preempt_min_runtime_s: float = Field(
        default=600,
        ge=0,
        allow_inf_nan=False,
        description="A job on borrowed GPUs runs at least this long before it can be preempted.",
    )
    backend: str = Field(
        default="local",
        description="Where jobs run: local (aisc's own executor and scheduler on this machine's "
        "GPUs) or slurm (Slurm schedules and enforces; aisc syncs accounts and meters sacct).",
    )
    slurm_conf: str | None = Field(
        default=None,
        description="slurm.conf for Slurm's commands (SLURM_CONF); unset: Slurm's own.",
    )
    slurm_cluster: str = Field(
        default="aisc", description="ClusterName in slurm.conf: accounts are made on it."
    )
    slurm_prefix: str = Field(
        default="aisc_",
        description="Prefix of the Slurm accounts, QOS and job names aisc manages; "
        "others are left alone.",
    )
    slurm_user: str | None = Field(
        default=None,
        description="Unix user aisc submits jobs as (added to every allocation's account); "
        "unset: the user running aisc.",
    )
    slurm_partition: str | None = Field(
        default=None, description="Partition for submitted jobs; unset: Slurm's default."
    )
    slurm_gpus_per_node: int = Field(
        default=8, ge=1, description="GPUs per Slurm node: larger jobs ask for whole nodes."
    )
    slurm_gpu_model: str = Field(
        default="H800", description="GPU model of Slurm nodes whose gres names no type."
    )
    slurm_sync_interval_s: float = Field(
        default=60,
        gt=0,
        le=DAY_S,
        allow_inf_nan=False,
        description="Seconds between syncs of awards into Slurm accounts and QOS.",
    )
    log_format: str = Field(
        default="json",
        description="How the server logs: json (one JSON object per line, for a log collector) "
        "or text (one readable line per record).",
    )
    log_level: str = Field(
        default="INFO", description="Lowest level logged: DEBUG, INFO, WARNING or ERROR."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that GET /metrics requires; unset: /metrics is open.",
    )
    host: str = Field(default="127.0.0.1", description="Address `aisc serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `aisc serve` listens on.")
    session_hours: float = Field(
        default=12,
        gt=0,
        le=366 * 24,
        allow_inf_nan=False,
        description="Hours a web portal sign-in lasts before the user signs in again.",
    )
    cookie_secure: bool = Field(
        default=False,
        description="Send the portal's session cookie over HTTPS only; set true behind an HTTPS "
        "proxy (it is always set when the request itself is HTTPS).",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL for single sign-on to the portal; unset: "
        "password sign-in only.",
    )
    oidc_client_id: str = Field(default="aisc", description="aisc's client id at the issuer.")
    oidc_client_secret: SecretStr = Field(
        default=SecretStr(""), description="aisc's client secret at the issuer."
    )
    oidc_label: str = Field(
        default="single sign-on",
        description="Name of the identity provider on the sign-in button.",
    )
    url: str = Field(default="http://127.0.0.1:8000", description="Server URL the CLI talks to.")
    token: str | None = Field(default=None, description="API token the CLI sends.")
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server that notifications are mailed through; unset: notifications "
        "show only in the portal.",
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="Port of the SMTP server.")
    smtp_sender: str = Field(
        default="aisc@localhost", description="From address of notification emails."
    )
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the SMTP connection with STARTTLS before sending."
    )
    smtp_username: str | None = Field(
        default=None, description="User name for SMTP authentication; unset: no login."
    )
    smtp_password: SecretStr | None = Field(
        default=None, description="Password for SMTP authentication."
    )
    notify_low_balance_percents: str = Field(
        default="25,10",
        description="Warn an allocation's organisation when its available GPU-hours fall to "
        "each of these percentages of the award (comma-separated whole numbers, 1 to 99).",
    )
    notify_ending_days: int = Field(
        default=14,
        ge=0,
        le=3660,
        description="Warn an organisation this many days before an award ends.",
    )
    notify_report_reminder_days: int = Field(
        default=7,
        ge=0,
        le=3660,
        description="Remind an organisation this many days before a progress report is due "
        "(and when it is overdue).",
    )
    notify_interval_s: float = Field(
        default=60,
        gt=0,
        le=DAY_S,
        allow_inf_nan=False,
        description="Seconds between the periodic notification checks and mail sends.",
    )

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value.lower() not in ("json", "text"):
            raise ValueError(f"bad log format {value!r}: use json or text")
        return value.lower()

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"bad log level {value!r}: use DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("notify_low_balance_percents")
    @classmethod
    def _check_percents(cls, value: str) -> str:
        parse_percents(value)
        return value

    def low_balance_percents(self) -> tuple[int, ...]:
        """The low-balance thresholds, highest first."""
        return parse_percents(self.notify_low_balance_percents)

    def policy_config(self) -> PolicyConfig:
        """The scheduler's policy from these settings; ValueError names what is wrong."""
        weights: dict[str, int] = {}
        for part in self.priority_weights.split(","):
            name, _, value = (text.strip() for text in part.partition("="))
            # ASCII digits only ("²".isdigit() is true), and few enough for a 32-bit weight
            whole = value.isascii() and value.isdigit() and len(value) <= 10
            if name not in ("age", "fairshare", "size", "qos") or not whole:
                raise ValueError(
                    f"bad priority weight {part.strip()!r}: use age=N,fairshare=N,size=N,qos=N"
                )
            if int(value) > MAX_WEIGHT:
                raise ValueError(f"bad priority weight {part.strip()!r}: at most {MAX_WEIGHT}")
            weights[name] = int(value)
        if self.reservations < 0 or self.max_age_s <= 0 or self.usage_half_life_s <= 0:
            raise ValueError("reservations must be >= 0; max age and half-life must be positive")
        return preset(self.policy).with_(
            weights=PriorityWeights(**weights),
            max_age_s=self.max_age_s,
            usage_half_life_s=self.usage_half_life_s,
            reservations=self.reservations,
            min_runtime_s=self.preempt_min_runtime_s,
            group_by_org=self.fairshare_by_org,
        )

    def validated_backend(self) -> str:
        if self.backend not in ("local", "slurm"):
            raise ValueError(f"unknown backend {self.backend!r}: use local or slurm")
        if self.slurm_gpus_per_node < 1:
            raise ValueError("slurm_gpus_per_node must be at least 1")
        return self.backend

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'aisc.db').resolve()}"


def parse_percents(text: str) -> tuple[int, ...]:
    """'25,10' -> (25, 10): distinct whole percentages from 1 to 99, highest first."""
    values: set[int] = set()
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 99:
            raise ValueError(f"bad percentage {item!r}: use whole numbers from 1 to 99, like 25,10")
        values.add(int(item))
    return tuple(sorted(values, reverse=True))


class ConfigError(ValueError):
    """A setting from the environment is unusable; the message is one line naming it."""


def get_settings() -> Settings:
    """The settings from the environment; ConfigError, one line naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """'AISC_PORT='abc': Input should be a valid integer...' for each error, on one line."""
    parts = []
    for error in exc.errors():
        name = f"AISC_{str(error['loc'][0]).upper()}" if error["loc"] else "a setting"
        given = repr(error.get("input"))
        given = given if len(given) <= 40 else given[:37] + "..."
        parts.append(f"{name}={given}: {error['msg']}")
    return " ".join("; ".join(parts).split())
