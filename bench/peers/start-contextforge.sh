#!/usr/bin/env bash
# IBM ContextForge (PyPI: mcp-contextforge-gateway) in front of one MCP upstream, with its JWT
# bearer authentication required on every request. See bench/peers/README.md.
#
#   bench/peers/start-contextforge.sh PORT UPSTREAM_MCP_URL   start (or reuse) it; prints on stdout
#                                                             URL=, TOKEN=, TOOL=, PID=, ... lines
#   bench/peers/start-contextforge.sh stop PORT               stop the one started on PORT
#
# Installs into $BENCH_PEERS_VENV/contextforge (default /tmp/bench-peers-venv) when missing.
# State (SQLite database, secrets, log, pid) in $BENCH_PEERS_STATE/contextforge-PORT
# (default /tmp/bench-peers). Every start is a fresh database: the same steps each time.
# Environment: CONTEXTFORGE_VERSION (default 1.1.0), CONTEXTFORGE_WORKERS (default 1: one
# uvicorn process; >1 needs Redis for stateful sessions, see the README).
set -euo pipefail

VERSION="${CONTEXTFORGE_VERSION:-1.1.0}"
WORKERS="${CONTEXTFORGE_WORKERS:-1}"
PEER=contextforge
# shellcheck source=bench/peers/common.sh
. "$(dirname "$0")/common.sh"

install() { install_pinned mcpgateway mcp-contextforge-gateway "mcp-contextforge-gateway==$VERSION"; }

# JSON field from stdin: json_get 'd["access_token"]'
json_get() { "$VENV/bin/python" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

[ $# -ge 1 ] || usage
if [ "$1" = stop ]; then
  [ $# -eq 2 ] || usage
  stop "$STATE_ROOT/contextforge-$2"
  exit 0
fi
[ $# -eq 2 ] || usage
PORT="$1"
UPSTREAM="$2"
DIR="$STATE_ROOT/contextforge-$PORT"
BASE="http://127.0.0.1:$PORT"

# Already running in front of the same upstream: say so again.
if alive "$DIR" && [ -f "$DIR/peer.env" ] && grep -qxF "UPSTREAM=$UPSTREAM" "$DIR/peer.env" &&
   curl -sf "$BASE/health" >/dev/null; then
  log "already running (pid $(cat "$DIR/pid"))"
  cat "$DIR/peer.env"
  exit 0
fi
alive "$DIR" && stop "$DIR"
if curl -s -o /dev/null "$BASE/health"; then die "port $PORT is taken by something else"; fi

install
rm -rf "$DIR"
mkdir -p "$DIR"
chmod 700 "$DIR"
secret() { "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))'; }
ADMIN_EMAIL=bench@example.com
ADMIN_PASSWORD="Bench-$(secret | cut -c1-24)"
cat > "$DIR/env" <<EOF
# ContextForge $VERSION, as started by bench/peers/start-contextforge.sh
HOST=127.0.0.1
PORT=$PORT
DATABASE_URL=sqlite:///$DIR/mcp.db
# Authentication: JWT (HS256) bearer required on every API and /mcp request.
AUTH_REQUIRED=true
MCP_CLIENT_AUTH_ENABLED=true
JWT_SECRET_KEY=$(secret)
AUTH_ENCRYPTION_SECRET=$(secret)
PLATFORM_ADMIN_EMAIL=$ADMIN_EMAIL
PLATFORM_ADMIN_PASSWORD=$ADMIN_PASSWORD
DEFAULT_USER_PASSWORD=Bench-$(secret | cut -c1-24)
BASIC_AUTH_PASSWORD=Bench-$(secret | cut -c1-24)
# No admin UI or admin API (both already off by default in 1.1.0).
MCPGATEWAY_UI_ENABLED=false
MCPGATEWAY_ADMIN_API_ENABLED=false
# The echo upstream is on 127.0.0.1: SSRF protection blocks loopback by default.
SSRF_ALLOW_LOCALHOST=true
# Default 100 requests/min per user on /mcp: a benchmark would be measuring 429s.
RATE_LIMITING_ENABLED=false
# Mcp-Session-Id for 2025-11-25 clients (doorman-bench's load generator needs one), and with it
# one reused upstream session per downstream session instead of one upstream session per call.
USE_STATEFUL_SESSIONS=true
# No Redis on this machine.
CACHE_TYPE=memory
LOG_LEVEL=ERROR
EOF
set -a; . "$DIR/env"; set +a
log "starting on $BASE in front of $UPSTREAM (state: $DIR)"
args=(--host 127.0.0.1 --port "$PORT")
[ "$WORKERS" -gt 1 ] && args+=(--workers "$WORKERS")
cd "$DIR"
setsid "$VENV/bin/mcpgateway" "${args[@]}" > "$DIR/log" 2>&1 < /dev/null &
echo $! > "$DIR/pid"
cd - >/dev/null

for _ in $(seq 240); do
  curl -sf "$BASE/health" >/dev/null && break
  alive "$DIR" || die "exited during start-up; see $DIR/log: $(tail -n 3 "$DIR/log")"
  sleep 0.5
done
curl -sf "$BASE/health" >/dev/null || { stop "$DIR"; die "not ready after 120 s; see $DIR/log"; }

fail() { log "$*"; stop "$DIR"; exit 1; }

# 1. Sign in as the bootstrapped platform admin (a 20-minute session JWT), used only to set up.
SESSION="$(curl -sf -X POST "$BASE/auth/email/login" -H 'content-type: application/json' \
  -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | json_get 'd["access_token"]')" \
  || fail "sign-in failed; see $DIR/log"
auth=(-H "authorization: Bearer $SESSION" -H 'content-type: application/json')

# 2. The upstream, registered as a gateway named "echo": its tools become echo-<tool>.
reply="$(curl -s -X POST "$BASE/gateways" "${auth[@]}" \
  -d "{\"name\":\"echo\",\"url\":\"$UPSTREAM\",\"transport\":\"STREAMABLEHTTP\"}")"
GATEWAY_ID="$(echo "$reply" | json_get 'd.get("id") or ""')"
if [ -z "$GATEWAY_ID" ]; then
  hint=""
  if grep -q 'validation errors* for ListToolsResult' "$DIR/log"; then
    hint=" (ContextForge's MCP SDK rejected the upstream's tools/list: a 2026-07-28 tools/list result must carry ttlMs and cacheScope; see the README)"
  fi
  fail "registering $UPSTREAM failed: $reply$hint"
fi
TOOL="$(curl -sf "$BASE/tools" "${auth[@]}" |
  json_get '[t["name"] for t in d if t.get("gatewayId") == "'"$GATEWAY_ID"'" and t.get("originalName") == "echo"][0]')" \
  || fail "no echo tool came from $UPSTREAM"

# 3. An API token (the credential an MCP client is given): a JWT with a jti, 1 day, checked on
#    every request (signature, expiry, revocation, the user's status).
TOKEN="$(curl -sf -X POST "$BASE/tokens" "${auth[@]}" -d "{\"name\":\"bench-$PORT\",\"expires_in_days\":1}" |
  json_get 'd["access_token"]')" || fail "creating the API token failed"

# 4. A tools/call through it in each protocol generation; remember which work.
mcp=(-H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
protocols=()
modern="$(curl -s -X POST "$BASE/mcp" "${mcp[@]}" -H 'mcp-protocol-version: 2026-07-28' \
  -H 'mcp-method: tools/call' -H "mcp-name: $TOOL" \
  -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$TOOL\",\"arguments\":{\"message\":\"benchmark\"},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}")"
case "$modern" in *'"text":"benchmark"'*) protocols+=(2026-07-28) ;; *) log "2026-07-28 tools/call: $modern" ;; esac
sid="$(curl -s -D - -o /dev/null -X POST "$BASE/mcp" "${mcp[@]}" -H 'mcp-protocol-version: 2025-11-25' \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
  tr -d '\r' | sed -n 's/^[Mm][Cc][Pp]-[Ss]ession-[Ii]d: //p')"
legacy="$(curl -s -X POST "$BASE/mcp" "${mcp[@]}" -H 'mcp-protocol-version: 2025-11-25' -H "mcp-session-id: $sid" \
  -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$TOOL\",\"arguments\":{\"message\":\"benchmark\"}}}")"
case "$legacy" in *'"text":"benchmark"'*) protocols+=(2025-11-25) ;; *) log "2025-11-25 tools/call: $legacy" ;; esac
[ -n "$sid" ] && curl -s -o /dev/null -X DELETE "$BASE/mcp" "${mcp[@]}" -H "mcp-session-id: $sid" || true
[ ${#protocols[@]} -gt 0 ] || fail "no tools/call went through"
unauth="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/mcp" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')"
[ "$unauth" = 401 ] || fail "a request without a token was answered $unauth, not 401"

{
  echo "URL=$BASE/mcp"
  echo "TOKEN=$TOKEN"
  echo "TOOL=$TOOL"
  echo "PROTOCOLS=$(IFS=,; echo "${protocols[*]}")"
  echo "PID=$(cat "$DIR/pid")"
  echo "VERSION=$VERSION"
  echo "UPSTREAM=$UPSTREAM"
  echo "STATE_DIR=$DIR"
} > "$DIR/peer.env"
log "ready (pid $(cat "$DIR/pid"))"
cat "$DIR/peer.env"
