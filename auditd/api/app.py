"""The FastAPI application. Built by a factory from the daemon's live objects: no globals."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from auditd import __version__


def create_app(
    engine: Engine,
    registry: CollectorRegistry,
    ready: Callable[[], bool | list[str]] = lambda: True,
    settings=None,
    poll: Callable[[], object] | None = None,
) -> FastAPI:
    """`settings` enables the token-protected routes and webhooks (None: read-only server);
    `poll` is called after an MLflow webhook (the daemon passes its registry poll); `ready` says
    True/False, or lists the reasons the daemon is not ready (empty: ready)."""
    from auditd.api import routes_actions, routes_hooks, routes_read

    app = FastAPI(
        title="auditd",
        version=__version__,
        description="Audits every new AI checkpoint for safety regressions. See docs/api.md.",
    )
    app.state.engine = engine
    app.state.registry = registry
    app.state.settings = settings
    app.state.poll = poll
    app.include_router(routes_read.router)
    app.include_router(routes_actions.router)
    app.include_router(routes_hooks.router)

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the process serves HTTP."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    def readyz(response: Response) -> dict:
        """Readiness: the database answers and the scheduler completes its cycles; 503 lists why not."""
        reasons = []
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
            db_ok = True
        except Exception as exc:
            db_ok = False
            reasons.append("database unreachable: " + " ".join(str(getattr(exc, "orig", None) or exc).split())[:200])
        state = ready()
        reasons += ([] if state else ["not ready"]) if isinstance(state, bool) else list(state)
        ok = not reasons
        response.status_code = 200 if ok else 503
        return {"ready": ok, "database": db_ok, "reasons": reasons}

    @app.get("/metrics")
    def metrics() -> Response:
        body = registry.render() if hasattr(registry, "render") else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
