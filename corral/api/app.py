"""The ASGI application: one `Corral` object holding the settings, the database, the event
recorder and the OIDC verifier, and the routes of every surface mounted on it.

`prepare()` readies the database (migrations, the bootstrap admin, demo data) before the server
starts; `create_app()` builds the app that serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from corral.api.errors import install_error_handlers
from corral.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from corral.api.routes import events as events_routes
from corral.api.routes import health, identity
from corral.events.recorder import EventRecorder
from corral.identity.bootstrap import ensure_admin
from corral.identity.oidc import OidcVerifier
from corral.settings import Settings
from corral.store.database import Database
from corral.store.migrate import upgrade


@dataclass
class Corral:
    settings: Settings
    database: Database
    recorder: EventRecorder
    oidc: OidcVerifier | None


async def _prepare(settings: Settings, demo: bool) -> str | None:
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    try:
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        new_key = await ensure_admin(database, settings.data_dir, settings.org_name, admin_key)
        if demo:
            from corral.demo import seed_demo

            await seed_demo(database)
        return new_key
    finally:
        await database.close()


def prepare(settings: Settings, demo: bool = False) -> str | None:
    """Migrate the database and make sure an admin exists; return a newly made admin key."""
    return asyncio.run(_prepare(settings, demo))


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.resolved_database_url)
        recorder = EventRecorder(database)
        oidc = None
        if settings.oidc_issuer and settings.oidc_audience:
            oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                                settings.oidc_jwks_min_refresh_seconds)
        app.state.corral = Corral(settings=settings, database=database, recorder=recorder, oidc=oidc)
        recorder.start()
        try:
            yield
        finally:
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
