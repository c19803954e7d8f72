#!/usr/bin/env bash
# Runs both services and the example web app in the foreground on the embedded defaults with
# prefixed logs. Ctrl-C (or any of them exiting) stops all three.
# Ports: AUTH_PORT (3001), RAG_PORT (8000), WEB_PORT (5173); the web app calls the ports set here.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export AUTH_PORT=${AUTH_PORT:-3001} RAG_PORT=${RAG_PORT:-8000} WEB_PORT=${WEB_PORT:-5173}
# The example web app's origin: allowed to use auth cookies and to call the API.
WEB_ORIGIN="http://localhost:$WEB_PORT"
DATA_DIR=${DATA_DIR:-$ROOT/data}
mkdir -p "$DATA_DIR"
# The shared secret of the account events feed (the rag-service reads deletions from the
# auth-service with it): generated once into the data folder (mode 0600) unless given.
if [ -z "${ACCOUNT_EVENTS_TOKEN:-}" ]; then
  TOKEN_FILE="$DATA_DIR/account-events-token"
  if [ ! -s "$TOKEN_FILE" ]; then
    ( umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN_FILE" )
  fi
  chmod 600 "$TOKEN_FILE"
  ACCOUNT_EVENTS_TOKEN=$(cat "$TOKEN_FILE")
fi
export ACCOUNT_EVENTS_TOKEN

prefix() { local tag=$1 color=$2; while IFS= read -r line; do printf '\033[%sm%-5s|\033[0m %s\n' "$color" "$tag" "$line"; done; }

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait 2>/dev/null
  echo "stopped"
}
trap cleanup INT TERM EXIT

# Mail links (verification, password reset, invitations) open the example app.
# MCP clients sign in with OAuth (docs/security.md): the auth-service issues tokens for the
# rag-service's public URL, which the rag-service knows as PUBLIC_URL.
RAG_URL="http://localhost:$RAG_PORT"
( cd auth-service && PORT=$AUTH_PORT AUTH_DATA_DIR="$DATA_DIR/auth" TRUSTED_ORIGINS="${TRUSTED_ORIGINS:-$WEB_ORIGIN}" \
  APP_URL="${APP_URL:-$WEB_ORIGIN}" OAUTH_RESOURCES="${OAUTH_RESOURCES:-$RAG_URL,$RAG_URL/mcp}" \
  exec node_modules/.bin/tsx src/server.ts ) \
  > >(prefix auth 36) 2>&1 &
pids+=($!)

( cd rag-service && DATA_DIR="$DATA_DIR/rag" PORT=$RAG_PORT CORS_ORIGINS="${CORS_ORIGINS:-$WEB_ORIGIN}" \
  AUTH_JWKS_URL="http://localhost:$AUTH_PORT/api/auth/jwks" AUTH_ISSUER="http://localhost:$AUTH_PORT" \
  PUBLIC_URL="${PUBLIC_URL:-$RAG_URL}" \
  exec .venv/bin/python -m rag_service ) > >(prefix rag 35) 2>&1 &
pids+=($!)

# The app's config.js names the ports above (scripts/serve_web.py), not the defaults.
rag-service/.venv/bin/python scripts/serve_web.py "$WEB_PORT" \
  --auth-url "http://localhost:$AUTH_PORT" --rag-url "http://localhost:$RAG_PORT" \
  > >(prefix web 33) 2>&1 &
pids+=($!)

echo "auth-service: http://localhost:$AUTH_PORT   rag-service: http://localhost:$RAG_PORT (API docs at /docs)"
echo "example web app: $WEB_ORIGIN   (Ctrl-C stops everything)"
if [ -n "${OIDC_PROVIDERS:-}" ]; then
  echo "single sign-on: the providers of OIDC_PROVIDERS (callbacks at http://localhost:$AUTH_PORT/api/auth/callback/<id>)"
fi
if [ -z "${SMTP_URL:-}" ]; then
  echo "mail (no SMTP_URL): http://localhost:$AUTH_PORT/dev/mailbox   (.eml files in ${MAIL_DIR:-$DATA_DIR/auth/mail})"
fi
# Whichever service stops first takes the other down with it.
wait -n "${pids[@]}"
