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
safe: what was done is not done again). A notification is answered within ``ANSWER_WITHIN_S``
whatever the tracking server does (503 when it has not answered by then), and each is handled
in a thread of its own: one waiting for the registry holds up no other.
"""

from __future__ import annotations

import hmac
import logging
import signal
import time
from types import FrameType

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from visionops import __version__
from visionops.errors import ConfigError
from visionops.monitoring.alerts import AlertRollback, Notification

logger = logging.getLogger(__name__)

ROUTES = ("/alerts", "/")
#: A notification's answer comes within this time: Alertmanager waits for it before it
#: retries, and an answer after minutes of MLflow's retries tells the operator nothing.
ANSWER_WITHIN_S = 8.0


def create_app(
    handler: AlertRollback, token: str, answer_within_s: float = ANSWER_WITHIN_S
) -> FastAPI:
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
        deadline = time.monotonic() + answer_within_s
        # A registry call stuck on the network cannot be interrupted: past the deadline its
        # thread is left to finish (the policy of env.SHORT_RETRY_POLICY bounds it) and the
        # notification is answered 503, so that Alertmanager retries it.
        with anyio.move_on_after(answer_within_s) as waited:
            outcomes = await anyio.to_thread.run_sync(
                handler.handle, notification, deadline, abandon_on_cancel=True
            )
        if waited.cancelled_caught:
            logger.warning(
                "the tracking server did not answer within %g s; answered 503 to a "
                "notification of %d alert(s) (Alertmanager retries it)",
                answer_within_s,
                len(notification.alerts),
            )
            raise HTTPException(
                503,
                f"the tracking server did not answer within {answer_within_s:g} s; retry later",
            )
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
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    given = credentials.strip().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        host = request.client.host if request.client else "unknown"
        # Which of the three, so that an operator can tell a missing secret from a stale one;
        # never what was sent (a wrong token may be a right one with a typo).
        if not header:
            what = "without an Authorization header"
        elif scheme.lower() != "bearer":
            # Not even the scheme: a header holding the bare token has it there.
            what = "with an Authorization header that is not a bearer token"
        else:
            what = "with a wrong bearer token"
        logger.warning("refused a request from %s %s", host, what)
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
