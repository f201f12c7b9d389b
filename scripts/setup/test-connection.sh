#!/usr/bin/env bash
# Check that a client reaches the tracking server and can log in (step 4 of the setup).
#
#   MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=... scripts/setup/test-connection.sh
#
# 1. GET /health answers (no login needed);
# 2. an anonymous API call is refused with 401 (basic-auth is really on);
# 3. an API call with the credentials succeeds; prints who you are (user, admin or not) and how
#    many experiments you can see.
# The server is MLFLOW_TRACKING_URI when it is an http(s) URL, else the configured
# VISIONOPS_SERVER_HOST/PORT. The credentials are MLFLOW_TRACKING_USERNAME/PASSWORD, else the
# admin's (VISIONOPS_ADMIN_USERNAME/PASSWORD). Settings come from the environment or ./.env.
# Exits 1 on the first failed step; changes nothing.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

only_help_argument "$@"

load_settings
require_commands curl
API_URL=$(client_url)
resolve_credentials
user=$API_USER

API_USER=""
api GET /health
[[ $API_STATUS == 200 ]] ||
    die "$API_URL/health: $([[ $API_STATUS == 000 ]] && echo "no answer (is the server running? scripts/setup/start-stack.sh)" || echo "HTTP $API_STATUS")"
echo "OK    health: $API_URL answers"

api GET "/api/2.0/mlflow/experiments/search?max_results=1"
[[ $API_STATUS == 401 ]] ||
    die "an anonymous request got HTTP $API_STATUS instead of 401: is the server running with --app-name basic-auth?"
echo "OK    auth: anonymous requests are refused (401)"

API_USER=$user
api GET /api/2.0/mlflow/users/current
case $API_STATUS in
200) ;;
401) die "$API_URL refused the login of '$API_USER' (401): wrong user name or password" ;;
*) die "$API_URL/api/2.0/mlflow/users/current: HTTP $API_STATUS: $API_BODY" ;;
esac
is_admin=$(json_field "$API_BODY" user.is_admin)
api GET "/api/2.0/mlflow/experiments/search?max_results=1000"
[[ $API_STATUS == 200 ]] || die "searching experiments as '$API_USER': HTTP $API_STATUS: $API_BODY"
experiments=$("$(project_python)" -c 'import json, sys; print(len(json.loads(sys.argv[1]).get("experiments", [])))' "$API_BODY")
echo "OK    login: you are '$API_USER' ($([[ $is_admin == true ]] && echo admin || echo "not an admin")) on $API_URL; you can see $experiments experiment(s)"
