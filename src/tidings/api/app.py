"""The FastAPI application: routes from each feature, problem responses, the runtime."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidings import __version__
from tidings.api import health
from tidings.api.problems import ApiProblem, handle_api_problem, handle_http, handle_validation
from tidings.billing.analytics_api import router as analytics_router
from tidings.billing.api import router as billing_router
from tidings.billing.reconciliation_api import router as reconciliation_router
from tidings.billing.retry_api import router as retry_router
from tidings.delivery import api as delivery_api
from tidings.delivery import receipts_api, tracking
from tidings.delivery.devices_api import router as devices_router
from tidings.delivery.metrics_api import router as metrics_router
from tidings.engine import api as engine_api
from tidings.engine import timeline
from tidings.intake import api as intake_api
from tidings.intake import webhook_api
from tidings.runtime import Runtime
from tidings.web import dashboard, mailbox

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(runtime: Runtime, *, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="Tidings",
        version=__version__,
        description="Notification and workflow engine for order management.",
    )
    app.state.runtime = runtime
    app.add_exception_handler(ApiProblem, handle_api_problem)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.include_router(health.router)
    app.include_router(intake_api.router)
    app.include_router(webhook_api.router)
    app.include_router(delivery_api.router)
    app.include_router(devices_router)
    app.include_router(metrics_router)
    app.include_router(receipts_api.router)
    app.include_router(tracking.router)
    app.include_router(engine_api.router)
    app.include_router(billing_router)
    app.include_router(retry_router)
    app.include_router(analytics_router)
    app.include_router(reconciliation_router)
    app.include_router(timeline.router)
    app.include_router(dashboard.router)
    if runtime.sink is not None:
        app.include_router(mailbox.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    return app
