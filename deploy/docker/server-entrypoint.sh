#!/bin/sh
# Entrypoint of visionops/server: turns secret files into what `mlflow server` reads, as
# visionops.server.process.server_environment does on a native install, then runs the command.
#   ADMIN_PASSWORD_FILE     -> admin_password in MLFLOW_AUTH_CONFIG_PATH (written here, mode 0600,
#                              with AUTH_DATABASE_URI, ADMIN_USERNAME, DEFAULT_PERMISSION and
#                              AUTH_CACHE_SECONDS, seconds a verified login is trusted: 30)
#   FLASK_SECRET_KEY_FILE   -> MLFLOW_FLASK_SERVER_SECRET_KEY (the same key in every worker)
#   POSTGRES_PASSWORD_FILE  -> PGPASSWORD, which libpq uses for the password-less URIs
# deploy/compose sets all three. Where one is unset, the variable it would set is left as the
# platform gives it (a Kubernetes Secret as an environment variable, say); without
# ADMIN_PASSWORD_FILE the auth config must already be a file at MLFLOW_AUTH_CONFIG_PATH, so that
# MLflow never falls back to its built-in config and that config's well-known admin password.
set -eu

read_secret() {
    if [ ! -s "$1" ]; then
        echo "error: the secret file $1 is missing or empty (see deploy/compose/README.md)" >&2
        exit 1
    fi
    tr -d '\r\n' <"$1"
}

if [ -n "${ADMIN_PASSWORD_FILE:-}" ]; then
    admin_password=$(read_secret "$ADMIN_PASSWORD_FILE")
    # The same rule as `visionops server start`: at least 12 characters and not MLflow's old
    # well-known default, compared by its sha256 so that the literal never sits in this folder.
    if [ "${#admin_password}" -lt 12 ]; then
        echo "error: the admin password in $ADMIN_PASSWORD_FILE needs at least 12 characters" >&2
        exit 1
    fi
    if [ "$(printf %s "$admin_password" | sha256sum | cut -c1-64)" = \
        b9c950640e1b3740e98acb93e669c65766f6670dd1609ba91ff41052ba48c6f3 ]; then
        echo "error: refusing MLflow's default admin password; choose another" >&2
        exit 1
    fi
    if [ -z "${AUTH_DATABASE_URI:-}" ]; then
        echo "error: AUTH_DATABASE_URI (the auth database's URI) is unset" >&2
        exit 1
    fi
    MLFLOW_AUTH_CONFIG_PATH=${MLFLOW_AUTH_CONFIG_PATH:-$HOME/basic_auth.ini}
    export MLFLOW_AUTH_CONFIG_PATH
    (
        umask 077
        # configparser reads '%' as interpolation: a literal one is written '%%'.
        cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${DEFAULT_PERMISSION:-READ}
database_uri = ${AUTH_DATABASE_URI}
admin_username = ${ADMIN_USERNAME:-admin}
admin_password = $(printf %s "$admin_password" | sed 's/%/%%/g')
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${AUTH_CACHE_SECONDS:-30}
INI
    )
    unset admin_password
elif [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ] || [ ! -s "$MLFLOW_AUTH_CONFIG_PATH" ]; then
    echo "error: set ADMIN_PASSWORD_FILE, or MLFLOW_AUTH_CONFIG_PATH to an existing auth" \
        "config: MLflow's built-in one has a well-known admin password" >&2
    exit 1
fi

if [ -n "${FLASK_SECRET_KEY_FILE:-}" ]; then
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(read_secret "$FLASK_SECRET_KEY_FILE")
    export MLFLOW_FLASK_SERVER_SECRET_KEY
fi
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    PGPASSWORD=$(read_secret "$POSTGRES_PASSWORD_FILE")
    export PGPASSWORD
fi
exec "$@"
