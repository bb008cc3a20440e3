"""The one settings object, read from CORRAL_* environment variables.

It owns parsing and validating configuration; it must never hold a secret in a form that is
printed: keys are SecretStr, and a bad value becomes a one-line error naming the variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.errors import ConfigError


class Settings(BaseSettings):
    """What `corral serve` needs to run."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Path(".corral")
    database_url: str | None = None  # default: SQLite in the data dir
    host: str = "127.0.0.1"
    port: int = Field(8700, ge=1, le=65535)
    admin_key: SecretStr | None = None
    redis_url: str | None = None
    redis_prefix: str = Field("corral", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # keeps deployments apart in one Redis
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_email_claim: str = "email"
    oidc_groups_claim: str = "groups"
    oidc_jwks_min_refresh_seconds: float = Field(30.0, ge=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    key_cache_seconds: float = Field(2.0, ge=0, le=60)  # how long a replica trusts a key it checked
    task_idle_seconds: float = Field(1800.0, gt=0)  # a task idle this long without completing is abandoned
    mcp_max_stdio: int = Field(32, ge=1, le=1000)  # stdio MCP servers this replica runs at once
    mcp_tools_seconds: float = Field(10.0, ge=0, le=3600)  # how long a server's tool list is reused
    org_name: str = "Corral"
    policy: Path | None = None  # the policy file installed at first start
    signing_key: SecretStr | None = None  # PRIVATE+KEY+... (Ed25519); default: data_dir/signing.key
    audit_origin: str = Field("corral/audit", pattern=r"^[^\s+]+$", max_length=200)
    checkpoint_seconds: float = Field(10.0, ge=0.05, le=3600)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value or None

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value or None

    @field_validator("admin_key")
    @classmethod
    def _valid_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        from corral.identity.tokens import is_well_formed

        if value is not None and not is_well_formed(value.get_secret_value()):
            raise ValueError("is not a Corral key (ck_...); generate one with `corral keygen`")
        return value

    @field_validator("signing_key")
    @classmethod
    def _valid_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        from corral.audit.note import NoteError, Signer

        if value is not None:
            try:
                Signer.parse(value.get_secret_value())
            except NoteError as error:
                raise ValueError(f"is not an Ed25519 signing key: {error}") from None
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> "Settings":
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("CORRAL_OIDC_AUDIENCE must be set when CORRAL_OIDC_ISSUER is")
        return self

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'corral.db').resolve()}"


class ClientSettings(BaseSettings):
    """What the `corral` command line needs to talk to a running Corral."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore", env_ignore_empty=True)

    url: str = "http://127.0.0.1:8700"
    key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


def _one_line(error: ValidationError, prefix: str = "CORRAL_") -> str:
    first = error.errors()[0]
    location = "_".join(str(part) for part in first["loc"]).upper()
    message = first["msg"].removeprefix("Value error, ")
    if not location:  # a model-level check names its variables itself
        return message
    value = first.get("input")
    secret = location.endswith(("KEY", "URL"))  # keys, and URLs that may hold a password
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    return f"{prefix}{location} {message}{shown}"


def load_settings(**overrides: object) -> Settings:
    """Read Settings from the environment; raise ConfigError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def load_client_settings() -> ClientSettings:
    try:
        return ClientSettings()
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None
