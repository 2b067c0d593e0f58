"""The FastAPI application: versioned routers under /api/v1, problem details for every error,
the portal, and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from aisc import __version__
from aisc.api import observability, problems
from aisc.api.deps import RuntimeDep
from aisc.api.routes import accounting, compute, funding, people, review
from aisc.api.schemas import HealthOut
from aisc.runtime import Runtime
from aisc.web.app import error_page, mount_portal

API_PREFIX = "/api/v1"


def create_app(runtime: Runtime, run_controller: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_controller:
            runtime.start_controller()
        try:
            yield
        finally:
            runtime.stop_controller()

    app = FastAPI(
        title="aisc",
        version=__version__,
        description="Apply, review, award, run jobs, meter, subsidise and invoice GPU compute "
        "at a publicly subsidised AI supercomputing centre.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    problems.install(app, html=error_page)

    api = APIRouter(prefix=API_PREFIX)
    api.add_api_route("/health", health, methods=["GET"], response_model=HealthOut, tags=["meta"])
    for module in (people, funding, review, compute, accounting):
        api.include_router(module.router)
    app.include_router(api)
    mount_portal(app, runtime.settings)
    observability.install(app, runtime)  # last: its middleware is the outermost
    return app


def health(runtime: RuntimeDep) -> HealthOut:
    """No token needed: for load balancers and `aisc status`."""
    with runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    backend_status = runtime.backend_status
    return HealthOut(
        # still 200 while degraded: the API keeps taking work, the controller catches up
        status="ok" if backend_status == "ok" else "degraded",
        database=runtime.engine.dialect.name,
        backend=runtime.backend_name,
        backend_status=backend_status,
        backend_last_contact=runtime.controller.last_contact,
        controller=runtime.controller_running,
    )
