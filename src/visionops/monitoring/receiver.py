"""The HTTP endpoint Alertmanager's webhook posts to (``visionops alerts receive``).

``POST /alerts`` (or ``/``) takes a version 4 webhook payload with ``Authorization: Bearer
<token>`` and answers what each alert did; ``GET /healthz`` answers without a token::

    app = create_app(AlertRollback("production", tracking_uri), token)
    uvicorn.run(app, host="127.0.0.1", port=9095)

Alertmanager's side, in ``alertmanager.yml``::

    receivers:
      - name: visionops-rollback
        webhook_configs:
          - url: http://visionops-alerts:9095/alerts
            http_config:
              authorization:
                credentials_file: /run/secrets/visionops_alerts_token

Answers: 200 with one entry per alert (rolled_back, or ignored with the reason); 401 without
the token; 400 for a body that is not JSON, 422 for JSON that is not a version 4 payload; 503
when the registry refused or could not be reached, so that Alertmanager retries (a retry is
safe: what was done is not done again).
"""

from __future__ import annotations

import hmac
import logging
import signal
from types import FrameType

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from visionops import __version__
from visionops.errors import ConfigError
from visionops.monitoring.alerts import AlertRollback, Notification

logger = logging.getLogger(__name__)

ROUTES = ("/alerts", "/")


def create_app(handler: AlertRollback, token: str) -> FastAPI:
    """The receiver's app; ``token`` is the bearer token every POST must carry."""
    if not token:
        raise ConfigError("the alert receiver needs a bearer token; none was given")
    expected = token.encode()
    app = FastAPI(
        title="visionops alerts receive",
        version=__version__,
        description=f"Alertmanager webhook receiver: rollback alerts move {handler.alias!r} back.",
    )

    async def receive(request: Request) -> JSONResponse:
        """A version 4 Alertmanager notification; answers what each alert did."""
        _authenticate(request, expected)  # before the body is read or parsed
        body = await request.body()
        try:
            notification = Notification.model_validate_json(body)
        except ValidationError as exc:
            raise _refusal(exc) from None
        outcomes = await run_in_threadpool(handler.handle, notification)
        failed = any(outcome.action == "failed" for outcome in outcomes)
        return JSONResponse(
            {"alias": handler.alias, "alerts": [outcome.as_dict() for outcome in outcomes]},
            status_code=503 if failed else 200,
        )

    for path in ROUTES:
        app.add_api_route(path, receive, methods=["POST"], summary="Receive alerts")

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _authenticate(request: Request, expected: bytes) -> None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    given = credentials.strip().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        host = request.client.host if request.client else "unknown"
        logger.warning("refused a request from %s without the bearer token", host)
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def _refusal(exc: ValidationError) -> HTTPException:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return HTTPException(400, f"the body is not JSON: {first['msg']}")
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    return HTTPException(
        422, f"not an Alertmanager webhook payload (version 4): {where}: {first['msg']}"
    )


def serve_receiver(handler: AlertRollback, token: str, host: str, port: int) -> None:
    """Serve until stopped; a SIGTERM stops it gracefully, and the process exits 0."""
    import uvicorn

    # uvicorn hands a signal back to the process's previous handler once it has shut down;
    # for SIGTERM that handler is this no-op, so a graceful stop returns.
    signal.signal(signal.SIGTERM, _stopped)
    # No access log: probes of /healthz would be a line each; every alert's outcome is logged.
    uvicorn.run(create_app(handler, token), host=host, port=port, access_log=False)


def _stopped(signum: int, frame: FrameType | None) -> None:
    logger.info("stopped by signal %d", signum)
