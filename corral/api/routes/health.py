"""Liveness and readiness for load balancers and orchestrators."""

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> dict[str, str]:
    """What answers here (Claude Code checks its base URL with a HEAD / before its first call)."""
    return {"name": "Corral", "docs": "/docs", "openai": "/v1", "anthropic": "/v1/messages"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    """The process can serve: its database answers (503 otherwise)."""
    await request.app.state.corral.database.ping()
    return {"status": "ready", "database": request.app.state.corral.database.dialect}
