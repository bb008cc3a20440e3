"""Settings: defaults, and a bad value is one line naming the variable with a non-zero exit."""

import os
import subprocess

import pytest

from corral.errors import ConfigError
from corral.settings import load_settings
from tests.conftest import CORRAL


def test_defaults_listen_on_loopback_8700_with_sqlite_in_the_data_dir(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CORRAL_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8700)
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith(".corral/corral.db")


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("CORRAL_PORT", "abc", "CORRAL_PORT"),
        ("CORRAL_PORT", "70000", "CORRAL_PORT"),
        ("CORRAL_DATABASE_URL", "mysql://x", "CORRAL_DATABASE_URL"),
        ("CORRAL_REDIS_URL", "localhost:6379", "CORRAL_REDIS_URL"),
        ("CORRAL_OIDC_ISSUER", "not-a-url", "CORRAL_OIDC_ISSUER"),
        ("CORRAL_ADMIN_KEY", "hunter2", "CORRAL_ADMIN_KEY"),
        ("CORRAL_MAX_BODY_BYTES", "-5", "CORRAL_MAX_BODY_BYTES"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(expected) and "\n" not in message


def test_a_bad_admin_key_is_not_echoed(monkeypatch):
    monkeypatch.setenv("CORRAL_ADMIN_KEY", "ck_secret-value-that-is-wrong")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "secret-value" not in str(raised.value)


def test_oidc_issuer_needs_an_audience(monkeypatch):
    monkeypatch.setenv("CORRAL_OIDC_ISSUER", "https://id.example.com")
    monkeypatch.delenv("CORRAL_OIDC_AUDIENCE", raising=False)
    with pytest.raises(ConfigError, match="CORRAL_OIDC_AUDIENCE"):
        load_settings()


def test_serve_with_a_bad_port_exits_non_zero_with_one_line(tmp_path):
    env = {**os.environ, "CORRAL_PORT": "eighty", "CORRAL_DATA_DIR": str(tmp_path)}
    result = subprocess.run([CORRAL, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("corral: CORRAL_PORT")


def test_a_bad_database_url_does_not_echo_its_password(monkeypatch):
    monkeypatch.setenv("CORRAL_DATABASE_URL", "mysql://corral:S3cretPass@db/corral")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "S3cretPass" not in str(raised.value) and str(raised.value).startswith("CORRAL_DATABASE_URL")


def test_db_upgrade_against_an_unreachable_database_is_one_line(tmp_path):
    from tests.conftest import free_port

    env = {**os.environ, "CORRAL_DATABASE_URL": f"postgresql+psycopg://corral:S3cretPass@127.0.0.1:{free_port()}/x"}
    result = subprocess.run([CORRAL, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("corral: cannot reach the database")
    assert result.stderr.strip().count("\n") == 0 and "S3cretPass" not in result.stderr
