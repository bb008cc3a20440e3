"""The ASGI application: one `Corral` object holding the settings, the database, the event
recorder and the OIDC verifier, and the routes of every surface mounted on it.

`prepare()` readies the database (migrations, the bootstrap admin, demo data) before the server
starts; `create_app()` builds the app that serves it."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp

from corral.api.errors import install_error_handlers
from corral.api.middleware import BodyLimitMiddleware, ForgetKeysOnChange, RequestIdMiddleware
from corral.api.routes import events as events_routes
from corral.api.routes import connect, health, identity, ingest, otlp
from corral.api.routes import metrics as metrics_routes
from corral.api.routes import audit as audit_routes
from corral.api.routes.hooks import ENDPOINTS as HOOK_ENDPOINTS
from corral.api.routes.llm import ENDPOINTS as MODEL_ENDPOINTS, ModelTraffic
from corral.api.routes.mcp import McpTraffic
from corral.api.routes import policy as policy_routes
from corral.api.routes import tools as tools_routes
from corral.events.recorder import EventRecorder
from corral.identity.bootstrap import ensure_admin
from corral.identity.keys import KeyCache
from corral.identity.oidc import OidcVerifier
from corral.audit.checkpoints import Checkpointer, load_signer, pin_key
from corral.audit.ledger import AuditLog
from corral.audit.note import NoteError, Signer
from corral.errors import ConfigError
from corral.gateway.llm.proxy import LlmGateway
from corral.gateway.llm.spending import Spending
from corral.gateway.mcp.gateway import McpGateway
from corral.hooks.service import Hooks
from corral.metrics.prometheus import GatewayCounters
from corral.metrics.rollup import Rollup
from corral.store.counters import counters_for
from corral.policy import versions
from corral.policy.active import PolicyState
from corral.policy.overrides import record_expiries
from corral.policy.schema import PolicyError
from corral.settings import Settings
from corral.store.database import Database
from corral.store.migrate import upgrade

log = logging.getLogger("corral")
SWEEP_SECONDS = 5.0


@dataclass
class Corral:
    settings: Settings
    database: Database
    recorder: EventRecorder
    oidc: OidcVerifier | None
    policy: PolicyState
    audit: AuditLog
    checkpointer: Checkpointer
    llm: LlmGateway
    mcp: McpGateway
    hooks: Hooks
    keys: KeyCache
    rollup: Rollup
    counters: GatewayCounters
    rebuilding: asyncio.Task[int] | None = None  # a metrics rebuild running in the background
    gauges: tuple[float, Any, int] | None = None  # (when, the five metrics' gauges, rollup lag) for /metrics


async def _prepare(settings: Settings, demo: bool) -> str | None:
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    signer = _signer(settings)  # made (into the data dir) or checked before anything is served
    database = Database(settings.resolved_database_url)
    try:
        async with database.transaction() as connection:
            await database.lock_for_startup(connection)
            try:
                await pin_key(connection, signer)
            except NoteError as error:
                raise ConfigError(f"CORRAL_SIGNING_KEY: {error}") from None
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        new_key = await ensure_admin(database, settings.data_dir, settings.org_name, admin_key)
        await install_first_policy(database, settings.policy, demo)
        if demo:
            from corral.demo import seed_demo

            await seed_demo(database)
        return new_key
    finally:
        await database.close()


async def install_first_policy(database: Database, path: Path | None, demo: bool) -> None:
    """At first start the policy comes from CORRAL_POLICY, else the demo's, else the starter
    policy (deny by default; admins approve changes)."""
    if path is not None:
        try:
            document, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"CORRAL_POLICY: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    else:
        name = "demo.yaml" if demo else "starter.yaml"
        document, source = (files("corral.policy") / name).read_text(encoding="utf-8"), f"corral/policy/{name}"
    async with database.transaction() as connection:
        await database.lock_for_startup(connection)
        try:
            installed = await versions.install_first(connection, document, source)
        except PolicyError as error:
            raise ConfigError("CORRAL_POLICY is not a valid policy:\n" + "\n".join(error.lines())) from None
        if installed is None and path is not None:
            active = await versions.active_version(connection)
            if active is not None and active.document != document:
                log.warning("CORRAL_POLICY is only read at first start; v%s is active. Change it with "
                            "`corral policy propose %s -m WHY`.", active.id, path)


def _signer(settings: Settings) -> Signer:
    configured = settings.signing_key.get_secret_value() if settings.signing_key else None
    try:
        return load_signer(configured, settings.data_dir, settings.audit_origin)
    except (NoteError, OSError) as error:
        raise ConfigError(f"CORRAL_SIGNING_KEY / CORRAL_AUDIT_ORIGIN: {error}") from None


def prepare(settings: Settings, demo: bool = False) -> str | None:
    """Migrate the database and make sure an admin exists; return a newly made admin key."""
    return asyncio.run(_prepare(settings, demo))


async def _sweep(corral: Corral) -> None:
    """Housekeeping every few seconds: record each override's expiry as it happens (decisions
    already ignore expired ones), the tasks that went idle without completing, and fold new
    events into the metrics."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            async with asyncio.timeout(30), corral.database.transaction() as connection:
                expired = await record_expiries(connection)
            if expired:
                corral.policy.invalidate()
            corral.llm.sweep_tasks()
            await corral.rollup.catch_up(budget_s=SWEEP_SECONDS)
        except Exception:  # a failed sweep is retried next time; it must never stop the server
            log.exception("housekeeping failed")


def create_app(settings: Settings) -> ASGIApp:
    """The REST app (FastAPI) behind the model endpoints' fast path, both behind the request id
    and the body limit."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.resolved_database_url)
        counters = GatewayCounters()
        recorder = EventRecorder(database, observer=counters.observe)
        oidc = None
        if settings.oidc_issuer and settings.oidc_audience:
            oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                                settings.oidc_jwks_min_refresh_seconds)
        signer = _signer(settings)
        policy = PolicyState(database)
        audit = AuditLog(database)
        shared = counters_for(settings.redis_url, settings.redis_prefix)
        mcp = McpGateway(policy, recorder, audit, database, shared, settings.mcp_max_stdio, signer.private_key,
                         settings.mcp_tools_seconds)
        corral = Corral(settings=settings, database=database, recorder=recorder, oidc=oidc, policy=policy, audit=audit,
                        checkpointer=Checkpointer(database, signer, settings.checkpoint_seconds),
                        llm=LlmGateway(policy, recorder, Spending(shared, database), settings.task_idle_seconds),
                        mcp=mcp, hooks=Hooks(policy, recorder, audit, database, mcp.waiters),
                        keys=KeyCache(settings.key_cache_seconds), rollup=Rollup(database), counters=counters)
        app.state.corral = corral
        recorder.start()
        corral.audit.start()
        corral.checkpointer.start()
        sweeper = asyncio.create_task(_sweep(corral))
        gc.collect()
        gc.freeze()  # what start-up made lives as long as the process: the collector need not scan it again
        try:
            async with corral.mcp.running():
                yield
        finally:
            sweeper.cancel()
            if corral.rebuilding is not None:
                corral.rebuilding.cancel()
            await asyncio.gather(sweeper, *([corral.rebuilding] if corral.rebuilding else []), return_exceptions=True)
            await corral.llm.close()
            await corral.checkpointer.stop()
            await corral.audit.stop()
            await recorder.stop()
            await database.close()

    app = FastAPI(
        title="Corral",
        summary="The control plane for AI coding agents.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(identity.router, prefix="/api/v1")
    app.include_router(events_routes.router, prefix="/api/v1")
    app.include_router(policy_routes.router, prefix="/api/v1")
    app.include_router(audit_routes.router, prefix="/api/v1")
    app.include_router(tools_routes.router, prefix="/api/v1")
    app.include_router(ingest.router, prefix="/api/v1")
    app.include_router(metrics_routes.router, prefix="/api/v1")
    app.include_router(connect.router, prefix="/api/v1")
    app.include_router(metrics_routes.exposition)
    app.include_router(otlp.router)
    app.add_middleware(ForgetKeysOnChange)
    fast = ModelTraffic(app, {**MODEL_ENDPOINTS, **HOOK_ENDPOINTS})
    return RequestIdMiddleware(BodyLimitMiddleware(McpTraffic(fast, app), max_bytes=settings.max_body_bytes))
