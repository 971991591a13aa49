#!/usr/bin/env bash
# LiteLLM's proxy (PyPI: litellm[proxy]) as an MCP gateway in front of one MCP upstream, with its
# master key required on every request. See bench/peers/README.md.
#
#   bench/peers/start-litellm.sh PORT UPSTREAM_MCP_URL   start (or reuse) it; prints on stdout
#                                                        URL=, TOKEN=, TOOL=, PID=, ... lines
#   bench/peers/start-litellm.sh stop PORT               stop the one started on PORT
#
# Installs into $BENCH_PEERS_VENV/litellm (default /tmp/bench-peers-venv) when missing.
# State (config, key, log, pid) in $BENCH_PEERS_STATE/litellm-PORT (default /tmp/bench-peers).
# Environment: LITELLM_VERSION (default 1.108.7), LITELLM_WORKERS (default 1).
# No database: LiteLLM's virtual keys need PostgreSQL plus Prisma's engines, which Prisma
# downloads from its own host at install time (not reachable here): the master key is the
# only credential.
set -euo pipefail

VERSION="${LITELLM_VERSION:-1.108.7}"
WORKERS="${LITELLM_WORKERS:-1}"
PEER=litellm
# shellcheck source=bench/peers/common.sh
. "$(dirname "$0")/common.sh"

install() { install_pinned litellm litellm "litellm[proxy]==$VERSION"; }

[ $# -ge 1 ] || usage
if [ "$1" = stop ]; then
  [ $# -eq 2 ] || usage
  stop "$STATE_ROOT/litellm-$2"
  exit 0
fi
[ $# -eq 2 ] || usage
PORT="$1"
UPSTREAM="$2"
DIR="$STATE_ROOT/litellm-$PORT"
BASE="http://127.0.0.1:$PORT"

if alive "$DIR" && [ -f "$DIR/peer.env" ] && grep -qxF "UPSTREAM=$UPSTREAM" "$DIR/peer.env" &&
   curl -sf "$BASE/health/liveliness" >/dev/null; then
  log "already running (pid $(cat "$DIR/pid"))"
  cat "$DIR/peer.env"
  exit 0
fi
alive "$DIR" && stop "$DIR"
if curl -s -o /dev/null "$BASE/"; then die "port $PORT is taken by something else"; fi

install
rm -rf "$DIR"
mkdir -p "$DIR"
chmod 700 "$DIR"
# LiteLLM master keys must start with sk-.
KEY="sk-bench-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
cat > "$DIR/config.yaml" <<EOF
# LiteLLM $VERSION, as started by bench/peers/start-litellm.sh
model_list: []
mcp_servers:
  echo:                 # tools become echo-<tool>
    url: $UPSTREAM
    transport: http     # Streamable HTTP
general_settings:
  master_key: $KEY      # required on every request (Authorization: Bearer, or x-litellm-api-key)
EOF
log "starting on $BASE in front of $UPSTREAM (state: $DIR)"
cd "$DIR"
# LITELLM_LOCAL_MODEL_COST_MAP: no fetch of the model price list from the internet at start-up.
LITELLM_LOCAL_MODEL_COST_MAP=True setsid "$VENV/bin/litellm" --config "$DIR/config.yaml" \
  --host 127.0.0.1 --port "$PORT" --num_workers "$WORKERS" > "$DIR/log" 2>&1 < /dev/null &
echo $! > "$DIR/pid"
cd - >/dev/null

for _ in $(seq 240); do
  curl -sf "$BASE/health/liveliness" >/dev/null && break
  alive "$DIR" || die "exited during start-up; see $DIR/log: $(tail -n 3 "$DIR/log")"
  sleep 0.5
done
curl -sf "$BASE/health/liveliness" >/dev/null || { stop "$DIR"; die "not ready after 120 s; see $DIR/log"; }

fail() { log "$*"; stop "$DIR"; exit 1; }

mcp=(-H "authorization: Bearer $KEY" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25')
sid="$(curl -s -D - -o /dev/null -X POST "$BASE/mcp" "${mcp[@]}" \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
  tr -d '\r' | sed -n 's/^[Mm][Cc][Pp]-[Ss]ession-[Ii]d: //p')"
[ -n "$sid" ] || fail "initialize gave no Mcp-Session-Id; see $DIR/log"
curl -s -o /dev/null -X POST "$BASE/mcp" "${mcp[@]}" -H "mcp-session-id: $sid" \
  -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
tools="$(curl -s -X POST "$BASE/mcp" "${mcp[@]}" -H "mcp-session-id: $sid" \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')"
case "$tools" in *'"name":"echo-echo"'*) TOOL=echo-echo ;; *) fail "no echo-echo tool from $UPSTREAM: $tools" ;; esac
protocols=()
legacy="$(curl -s -X POST "$BASE/mcp" "${mcp[@]}" -H "mcp-session-id: $sid" \
  -d "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"$TOOL\",\"arguments\":{\"message\":\"benchmark\"}}}")"
case "$legacy" in *'"text":"benchmark"'*) protocols+=(2025-11-25) ;; *) log "2025-11-25 tools/call: $legacy" ;; esac
curl -s -o /dev/null -X DELETE "$BASE/mcp" "${mcp[@]}" -H "mcp-session-id: $sid" || true
modern="$(curl -s -X POST "$BASE/mcp" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
  -H 'mcp-method: tools/call' -H "mcp-name: $TOOL" \
  -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$TOOL\",\"arguments\":{\"message\":\"benchmark\"},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}")"
case "$modern" in *'"text":"benchmark"'*) protocols+=(2026-07-28) ;; *) log "2026-07-28 tools/call: $modern" ;; esac
[ ${#protocols[@]} -gt 0 ] || fail "no tools/call went through"
# Without the key, and with a wrong one: refused (LiteLLM answers 500 and 400 here, not 401,
# because without a database its error path trips over the missing Prisma client).
for hdr in "x-none: 1" "authorization: Bearer sk-wrong"; do
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/mcp" -H "$hdr" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo-echo","arguments":{"message":"x"}}}')"
  case "$code" in 2*) fail "a request with \"$hdr\" was answered $code" ;; esac
done

{
  echo "URL=$BASE/mcp"
  echo "TOKEN=$KEY"
  echo "TOOL=$TOOL"
  echo "PROTOCOLS=$(IFS=,; echo "${protocols[*]}")"
  echo "PID=$(cat "$DIR/pid")"
  echo "VERSION=$VERSION"
  echo "UPSTREAM=$UPSTREAM"
  echo "STATE_DIR=$DIR"
} > "$DIR/peer.env"
log "ready (pid $(cat "$DIR/pid"))"
cat "$DIR/peer.env"
