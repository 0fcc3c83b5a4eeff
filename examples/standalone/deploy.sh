#!/usr/bin/env bash
# Deploys relay + PostgreSQL + Redis with Docker Compose:
#  1. writes .env from .env.example when missing, with a fresh SECRET_KEY
#     (openssl rand -hex 32) and ADMIN_PASSWORD;
#  2. asks for UPSTREAM_API_KEY when .env has none;
#  3. builds and starts the stack, applies migrations, waits for health.
# Usage: ./deploy.sh [-f docker-compose.external.yml]
set -euo pipefail
cd "$(dirname "$0")"
compose=(docker compose "$@")

command -v docker >/dev/null || { echo "docker is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }

[ -f .env ] || cp .env.example .env
chmod 600 .env

set_var() { # set_var NAME VALUE: replace or append NAME=VALUE in .env
  if grep -q "^$1=" .env; then sed -i.bak "s|^$1=.*|$1=$2|" .env && rm -f .env.bak; else echo "$1=$2" >> .env; fi
}
get_var() { grep "^$1=" .env | head -1 | cut -d= -f2- || true; }

if [ -z "$(get_var SECRET_KEY)" ]; then set_var SECRET_KEY "$(openssl rand -hex 32)"; echo "wrote SECRET_KEY to .env"; fi
if [ -z "$(get_var ADMIN_PASSWORD)" ]; then
  pw=$(openssl rand -hex 16); set_var ADMIN_PASSWORD "$pw"
  echo "wrote ADMIN_PASSWORD to .env — admin login: admin:$pw"
fi
if [ -z "$(get_var POSTGRES_PASSWORD)" ]; then set_var POSTGRES_PASSWORD "$(openssl rand -hex 16)"; fi
if [ -z "$(get_var UPSTREAM_API_KEY)" ]; then
  read -r -s -p "UPSTREAM_API_KEY (your Anthropic API key): " key; echo
  [ -n "$key" ] || { echo "UPSTREAM_API_KEY is required" >&2; exit 1; }
  set_var UPSTREAM_API_KEY "$key"
fi

"${compose[@]}" build
"${compose[@]}" up -d
# The server migrates at start too (unless RELAY_AUTO_MIGRATE=false); this
# makes a failure visible here.
"${compose[@]}" run --rm --no-deps relay migrate up

port=$(get_var RELAY_PORT); port=${port:-8000}
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
    echo "relay is up on http://127.0.0.1:$port"; exit 0
  fi
  sleep 1
done
echo "relay did not become healthy; see: ${compose[*]} logs relay" >&2
exit 1
