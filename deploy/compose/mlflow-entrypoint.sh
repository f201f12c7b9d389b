#!/bin/sh
# Entrypoint of the mlflow image: turns the Docker secrets into what `mlflow server` reads, as
# visionops.server.process.server_environment does on a native install, then runs the command.
#   ADMIN_PASSWORD_FILE     -> admin_password in MLFLOW_AUTH_CONFIG_PATH (written here, mode 0600)
#   FLASK_SECRET_KEY_FILE   -> MLFLOW_FLASK_SERVER_SECRET_KEY (the same key in every worker)
#   POSTGRES_PASSWORD_FILE  -> PGPASSWORD, which libpq uses for the password-less URIs
set -eu

read_secret() {
    if [ ! -s "$1" ]; then
        echo "error: the secret file $1 is missing or empty (see deploy/compose/README.md)" >&2
        exit 1
    fi
    tr -d '\r\n' <"$1"
}

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

umask 077
# configparser reads '%' as interpolation: a literal one is written '%%'.
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${DEFAULT_PERMISSION}
database_uri = ${AUTH_DATABASE_URI}
admin_username = ${ADMIN_USERNAME}
admin_password = $(printf %s "$admin_password" | sed 's/%/%%/g')
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

MLFLOW_FLASK_SERVER_SECRET_KEY=$(read_secret "$FLASK_SECRET_KEY_FILE")
PGPASSWORD=$(read_secret "$POSTGRES_PASSWORD_FILE")
export MLFLOW_FLASK_SERVER_SECRET_KEY PGPASSWORD
exec "$@"
