"""Shared fixtures: a database per backend (SQLite always; PostgreSQL when
CORRAL_TEST_DATABASE_URL is set, created and dropped by this run), a real `corral serve` process
per backend, and a local OIDC issuer whose keys are generated here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from corral.identity.tokens import generate_key

PG_URL = os.environ.get("CORRAL_TEST_DATABASE_URL")
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.skipif(
        not PG_URL, reason="PostgreSQL tests need CORRAL_TEST_DATABASE_URL (set by .ci/run)")),
]
REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
JWKS_REFRESH = 2.0  # seconds between JWKS refetches of the test servers
CORRAL = str(Path(sys.executable).parent / "corral")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    admin = make_url(PG_URL)
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    with new_pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'corral.db'}"
    else:
        with new_pg_database() as url:
            yield url


@contextmanager
def own_database(backend: str, directory: Path) -> Iterator[str]:
    """A database for one server alone (servers with their own signing keys must not share one)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'corral.db'}"
    else:
        with new_pg_database() as url:
            yield url


def database_url_for(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / 'corral.db'}"
    return request.getfixturevalue("pg_database")


# ---- a local OIDC issuer ------------------------------------------------------------------


@dataclass
class Issuer:
    """Signs tokens with keys made here and serves their JWKS on 127.0.0.1."""

    url: str = ""
    audience: str = "corral-test"
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[dict[str, Any]] = field(default_factory=list)
    jwks_requests: int = 0

    def add_key(self, kid: str, kind: str = "rsa") -> Any:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
            else ec.generate_private_key(ec.SECP256R1())
        algorithm = jwt.algorithms.RSAAlgorithm if kind == "rsa" else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
        jwk.update(kid=kid, use="sig")
        self.keys[kid] = private
        self.published.append(jwk)
        return private

    def token(self, email: str | None = "alice@example.com", kid: str = "k1", alg: str = "RS256",
              key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": self.audience, "iat": now, "exp": now + 300, "sub": str(email)}
        if email is not None:
            body["email"] = email
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key if key is not None else self.keys[kid], algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    state = Issuer()
    state.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/jwks.json":
                state.jwks_requests += 1
                payload = json.dumps({"keys": state.published}).encode()
            elif self.path == "/.well-known/openid-configuration":
                payload = json.dumps({"issuer": state.url, "jwks_uri": state.url + "/jwks.json"}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


# ---- a running Corral ---------------------------------------------------------------------


@dataclass
class Server:
    url: str
    admin_key: str
    database_url: str
    data_dir: Path
    log_path: Path
    backend: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def cli(self, *args: str, key: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CORRAL_URL": self.url, "CORRAL_KEY": key or self.admin_key, "COLUMNS": "200"}
        result = subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} failed: {result.stderr}")
        return result


def start_server(data_dir: Path, database_url: str, env: dict[str, str], demo: bool = False
                 ) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log_path = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "CORRAL_DATA_DIR": str(data_dir), "CORRAL_DATABASE_URL": database_url,
                "CORRAL_PORT": str(port), **env}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([CORRAL, "serve", *(["--demo"] if demo else [])], env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"corral serve exited: {log_path.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url, log_path
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"corral serve did not become ready: {log_path.read_text()}")


@contextmanager
def listening(command: list[str], url: str, timeout: float = 30, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server process (its own process group) until the with-block ends, once `url` answers."""
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, issuer: Issuer
           ) -> Iterator[Server]:
    """One `corral serve` per backend, shared by the tests of the session. Pytest may stop it and
    start it again when the order of tests switches backends; it then restarts on the same data
    directory (and so the same signing key), as a real server would."""
    backend = request.param
    data_dir = tmp_path_factory.getbasetemp() / f"corral-{backend}"
    data_dir.mkdir(exist_ok=True)
    database_url = database_url_for(backend, request, data_dir)
    admin_key = generate_key()
    env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_MAX_BODY_BYTES": str(64 * 1024),
           "CORRAL_OIDC_ISSUER": issuer.url, "CORRAL_OIDC_AUDIENCE": issuer.audience,
           "CORRAL_OIDC_JWKS_URL": issuer.url + "/jwks.json", "CORRAL_OIDC_JWKS_MIN_REFRESH_SECONDS": str(JWKS_REFRESH),
           "CORRAL_CHECKPOINT_SECONDS": "0.5"}
    process, url, log_path = start_server(data_dir, database_url, env, demo=True)
    try:
        yield Server(url, admin_key, database_url, data_dir, log_path, backend)
    finally:
        stop_server(process)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_user(server: Server):
    """Create a user (and optionally a key) through the API; returns (email, key or None)."""

    def make(roles: tuple[str, ...] = ("developer",), teams: tuple[str, ...] = (),
             scopes: tuple[str, ...] | None = None, key: bool = True) -> tuple[str, str | None]:
        email = f"{unique('user')}@example.com"
        with server.admin() as admin:
            response = admin.post("/api/v1/users", json={"email": email, "roles": list(roles), "teams": list(teams)})
            assert response.status_code == 201, response.text
            if not key:
                return email, None
            body: dict[str, Any] = {"user": email}
            if scopes is not None:
                body["scopes"] = list(scopes)
            created = admin.post("/api/v1/keys", json=body)
            assert created.status_code == 201, created.text
            return email, created.json()["key"]

    return make


def tamper_with_ledger(database_url: str, statement: str, **params: Any) -> None:
    """Change the ledger behind Corral's back, as a database administrator would: with the
    database's own client, after dropping the trigger that keeps it append-only."""
    from corral.store.database import sync_url

    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records"))
            else:
                connection.execute(text("DROP TRIGGER IF EXISTS audit_records_no_update"))
                connection.execute(text("DROP TRIGGER IF EXISTS audit_records_no_delete"))
            connection.execute(text(statement), params)
    finally:
        engine.dispose()
