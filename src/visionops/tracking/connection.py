"""The tracking server boundary: one clear line for a refused login, a refused permission or a
server that does not answer, instead of MLflow's traceback or minutes of its retries.

Commands that talk to a server check it first, then translate what MLflow raises later::

    uri = check_command_server(args.tracking_uri)  # TrackingServerError within seconds
    ...
    except MlflowException as error:
        translated = tracking_error(error, uri)  # None: not about the server connection

Messages name the server and the user, never a password (not even one written into the URL).
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from visionops.config import redact_url
from visionops.errors import VisionOpsError

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import MlflowHostCreds

#: ``GET /health``: the server is down when it does not answer within this time (a hung or
#: firewalled host otherwise holds the command for MLflow's 120 s timeout, times its retries).
HEALTH_TIMEOUT_SEC = 3.0
#: The authenticated probe: the server answered /health, so only a very slow one takes longer.
LOGIN_TIMEOUT_SEC = 5.0
#: A cheap call every account may make: MLflow filters searches by permission, never refuses.
LOGIN_PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/search"

_START_HINT = "start it (`visionops server start`) or point MLFLOW_TRACKING_URI at a running server"
_TLS_HINT = "set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle, or fix the URL's scheme"
_LOGIN_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server"
)
_REASON_CHARS = 160
# MLflow names the endpoint of a refused REST call in its message ("API request to endpoint
# /api/2.0/mlflow/runs/create failed with error code 403 != 200 ...").
_ENDPOINT = re.compile(r"/api/\d\.\d/(mlflow(?:-artifacts)?/[\w./-]*\w)")
_READ_VERBS = ("get", "search", "list")
_EXPERIMENT = ("--experiment EXPERIMENT", "experiment")
_MODEL = ("--model MODEL", "registered model")
_ANY_TARGET = "{--experiment EXPERIMENT | --model MODEL}"


class TrackingServerError(VisionOpsError):
    """The tracking server is unreachable, or refused the login or a permission."""


def command_tracking_uri(explicit: str | None = None, *, config_env: bool = False) -> str:
    """The tracking URI a command will talk to.

    Args:
        explicit: its ``--tracking-uri``, or the resolved config's ``tracking_uri``.
        config_env: also honour ``VISIONOPS_TRACKING_URI``, for commands whose config would
            (``tune``) but is not resolved yet.
    """
    if explicit:
        return explicit
    if config_env:
        from visionops.env import config_overrides_from_env

        from_config = config_overrides_from_env(["tracking_uri"]).get("tracking_uri")
        if from_config:
            return from_config
    from visionops.tracking.client import resolve_tracking_uri

    return resolve_tracking_uri()


def check_command_server(explicit: str | None = None, *, config_env: bool = False) -> str:
    """Check the server a command will talk to (see ``command_tracking_uri``); returns its URI."""
    tracking_uri = command_tracking_uri(explicit, config_env=config_env)
    check_tracking_server(tracking_uri)
    return tracking_uri


def check_tracking_server(tracking_uri: str) -> None:
    """Raise ``TrackingServerError`` unless the http(s) server answers and accepts the login.

    Takes at most ``HEALTH_TIMEOUT_SEC + LOGIN_TIMEOUT_SEC``: both requests go out once, with
    MLflow's own helper so TLS, proxy and credential settings are the ones its client uses.
    Local stores (sqlite, a folder) return at once.
    """
    if not _is_http(tracking_uri):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    try:
        health = http_request(
            creds,
            "/health",
            "GET",
            max_retries=0,
            timeout=HEALTH_TIMEOUT_SEC,
            raise_on_status=False,
        )
    except MlflowException as error:
        reason = f"no answer within {HEALTH_TIMEOUT_SEC:g} s" if _timed_out(error) else None
        raise TrackingServerError(unreachable_message(tracking_uri, error, reason)) from error
    if int(health.status_code) >= 500:  # a proxy in front of a server that is down
        raise TrackingServerError(
            unreachable_message(tracking_uri, reason=f"/health answered HTTP {health.status_code}")
        )

    try:
        probe = http_request(
            creds,
            LOGIN_PROBE_ENDPOINT,
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=LOGIN_TIMEOUT_SEC,
            raise_on_status=False,
        )
    except MlflowException as error:
        if _timed_out(error):
            return  # it answered /health: up but slow, MLflow's longer timeouts may well do
        raise TrackingServerError(unreachable_message(tracking_uri, error)) from error
    status = int(probe.status_code)
    if status == 401:
        raise TrackingServerError(login_message(tracking_uri, creds))
    if status == 403:
        raise TrackingServerError(
            permission_message(tracking_uri, LOGIN_PROBE_ENDPOINT, _first_line(probe.text), creds)
        )
    if status == 404:
        raise TrackingServerError(
            f"{redact_url(tracking_uri)} answers but is not an MLflow tracking server "
            f"(HTTP 404 for {LOGIN_PROBE_ENDPOINT}); point MLFLOW_TRACKING_URI at the server's "
            "root URL"
        )
    if status >= 500:
        raise TrackingServerError(
            f"the tracking server at {redact_url(tracking_uri)} is up but fails requests (HTTP "
            f"{status} for {LOGIN_PROBE_ENDPOINT}); see the server's log"
        )


def tracking_error(
    error: MlflowException,
    tracking_uri: str,
    *,
    experiment: str | None = None,
    model: str | None = None,
) -> TrackingServerError | None:
    """The one-line error for an MLflow exception about the server connection or the login
    (HTTP 401, 403, a refused or timed-out connection); None for any other error.

    Args:
        experiment, model: the experiment and registered model the failed work was about, when
            the caller knows them: a 403's grant hint names them.
    """
    if not _is_http(tracking_uri):
        return None
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(tracking_uri)
    message = str(error.message)
    if error.error_code == "UNAUTHENTICATED":
        return TrackingServerError(login_message(tracking_uri, creds))
    if error.error_code == "PERMISSION_DENIED":
        endpoint = _ENDPOINT.search(message)
        return TrackingServerError(
            permission_message(
                tracking_uri,
                endpoint.group(0) if endpoint else None,
                _first_line(message),
                creds,
                experiment=experiment,
                model=model,
            )
        )
    if _is_connection_failure(error):
        return TrackingServerError(unreachable_message(tracking_uri, error))
    if _is_repeated_server_failure(error):
        return TrackingServerError(
            f"the tracking server at {redact_url(tracking_uri)} kept failing requests "
            f"({_first_line(message)}); see the server's log"
        )
    return None


def login_message(tracking_uri: str, creds: MlflowHostCreds) -> str:
    """A refused login (HTTP 401), naming the account but never the password."""
    if creds.username and creds.password:
        who = f"refused the login of user {creds.username!r}"
    elif creds.token:
        who = "refused the token in MLFLOW_TRACKING_TOKEN"
    elif creds.username:
        # MLflow sends basic auth only when both are set.
        who = "asks for a login and none was sent (MLFLOW_TRACKING_PASSWORD is not set)"
    else:
        who = "asks for a login and no credentials were sent"
    return f"the tracking server at {redact_url(tracking_uri)} {who} (HTTP 401); {_LOGIN_HINT}"


def permission_message(
    tracking_uri: str,
    endpoint: str | None,
    detail: str,
    creds: MlflowHostCreds,
    *,
    experiment: str | None = None,
    model: str | None = None,
) -> str:
    """A refused permission (HTTP 403), saying which permission the call needs.

    Args:
        endpoint: the refused REST endpoint, if known (``/api/2.0/mlflow/runs/create``).
        detail: the server's own words, shown when the endpoint is not known.
        experiment, model: names the grant command is written with, when known (else the
            placeholders EXPERIMENT and MODEL).
    """
    who = f"user {creds.username!r}" if creds.username else "an anonymous caller"
    call = _ENDPOINT.search(endpoint or "")
    if call is None:
        return (
            f"the tracking server at {redact_url(tracking_uri)} refused {who} permission "
            f"(HTTP 403: {detail}); ask an admin for the permission (`visionops admin grant ...`)"
        )
    level, target, resource = _needed_permission(call.group(1))
    if level is None:
        needs = "an admin account: ask an admin to run the command, or to make you one"
    else:
        target = _named_target(target, experiment, model)
        grant = f"visionops admin grant --user {creds.username or 'USER'} {target} --permission"
        needs = f"{level} on the {resource}: ask an admin to run `{grant} {level}`"
    return (
        f"the tracking server at {redact_url(tracking_uri)} refused {who} permission for "
        f"{call.group(1).removeprefix('mlflow/')} (HTTP 403); it needs {needs}"
    )


def unreachable_message(
    tracking_uri: str, error: BaseException | None = None, reason: str | None = None
) -> str:
    """A server that does not answer: why (refused, timed out, unknown host) and what to do."""
    hint = _START_HINT
    if reason is None:
        cause = _requests_cause(error) if error is not None else None
        text = str(cause if cause is not None else error)
        reason = _connection_reason(text, cause)
        if "SSL" in type(cause).__name__ or "CERTIFICATE" in text:
            hint = _TLS_HINT
    return f"cannot reach the tracking server at {redact_url(tracking_uri)} ({reason}); {hint}"


def _needed_permission(call: str) -> tuple[str | None, str, str]:
    """(permission level, grant target, what it is on) a REST call needs, after MLflow's
    basic-auth rules; the level is None for calls only an admin may make (users/...)."""
    path = call.removeprefix("mlflow/")
    if path.startswith("users/permissions/"):  # a grant: the body names the resource
        return "MANAGE", _ANY_TARGET, "experiment or registered model"
    if path.startswith("users/"):
        return None, "", ""
    model = path.startswith(("registered-models/", "model-versions/"))
    target, resource = _MODEL if model else _EXPERIMENT
    verb = path.rsplit("/", 1)[-1]
    if "permissions/" in path:
        return "MANAGE", target, resource
    if verb.startswith(_READ_VERBS) or call.startswith("mlflow-artifacts/"):
        return "READ", target, resource
    if verb in ("delete", "restore"):
        return "MANAGE", target, resource
    return "EDIT", target, resource


def _named_target(target: str, experiment: str | None, model: str | None) -> str:
    """``target`` of ``_needed_permission`` with the known names in place of placeholders; a
    grant on either kind names the one that is known."""
    flags = {_EXPERIMENT[0]: ("--experiment", experiment), _MODEL[0]: ("--model", model)}
    if target == _ANY_TARGET:
        known = [(flag, name) for flag, name in flags.values() if name]
        return f"{known[0][0]} {shlex.quote(known[0][1])}" if len(known) == 1 else target
    flag, name = flags.get(target, ("", None))
    return f"{flag} {shlex.quote(name)}" if name else target


def _is_http(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def _requests_cause(error: BaseException | None) -> BaseException | None:
    """The ``requests`` exception behind MLflow's (it raises its own inside the except)."""
    import requests

    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, requests.RequestException):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _timed_out(error: BaseException) -> bool:
    import requests

    cause = _requests_cause(error)
    # urllib3 with no retries left reports a read timeout as a ConnectionError, in words.
    return isinstance(cause, requests.Timeout) or "timed out" in str(cause or error)


def _is_connection_failure(error: MlflowException) -> bool:
    import requests

    cause = _requests_cause(error)
    if cause is not None:
        return isinstance(cause, requests.ConnectionError | requests.Timeout)
    # The chain is lost when the error crossed a process (Ray): MLflow's words remain.
    text = str(error.message)
    return "API request to" in text and bool(
        re.search(r"Connection refused|Failed to establish|timed out|timeout exception", text)
    )


def _is_repeated_server_failure(error: MlflowException) -> bool:
    """MLflow's retries of an HTTP 5xx ran out (the server is up but broken)."""
    import requests

    return isinstance(_requests_cause(error), requests.exceptions.RetryError)


def _connection_reason(text: str, cause: BaseException | None) -> str:
    import requests

    if isinstance(cause, requests.Timeout) or "timed out" in text or "timeout" in text:
        return "no answer in time"
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (
            r"Name or service not known|nodename nor servname|getaddrinfo|name resolution",
            "unknown host",
        ),
        (r"No route to host|Network is unreachable", "no route to the host"),
        (r"CERTIFICATE_VERIFY_FAILED|SSL|TLS", "TLS handshake failed"),
        (r"Connection reset|RemoteDisconnected|Connection aborted", "the connection was dropped"),
    ):
        if re.search(pattern, text):
            return reason
    return _first_line(text)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no message"
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."
