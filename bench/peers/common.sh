# What bench/peers/start-*.sh share: where venvs and state go, logging, stopping a peer's whole
# process group, a Python >= 3.12, and installing one pinned package into the peer's venv.
# The sourcing script sets PEER (its name) and VERSION first.

VENV_ROOT="${BENCH_PEERS_VENV:-/tmp/bench-peers-venv}"
VENV="$VENV_ROOT/$PEER"
STATE_ROOT="${BENCH_PEERS_STATE:-/tmp/bench-peers}"

log() { echo "$PEER: $*" >&2; }
die() { log "$*"; exit 1; }

# The script's header comment (after the shebang) as the usage text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

alive() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

stop() {
  local dir="$1" pid
  if ! alive "$dir"; then
    rm -f "$dir/pid"
    log "not running ($dir)"
    return 0
  fi
  pid="$(cat "$dir/pid")"
  # setsid made it a process-group leader: its uvicorn workers and any pool go with it.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # A graceful shutdown can hang on open sessions (seen with ContextForge): then SIGKILL.
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  # The rest of its process group gone too, so the port is free.
  for _ in $(seq 25); do [ -z "$(ps -o pid= -g "$pid" 2>/dev/null)" ] && break; sleep 0.2; done
  [ -z "$(ps -o pid= -g "$pid" 2>/dev/null)" ] || kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  log "stopped (pid $pid)"
}

# A Python >= 3.12 that runs (pyenv's shims exist for versions that are not selected).
find_python() {
  local p
  for p in python3.12 python3.13 python3 "$(pyenv root 2>/dev/null)"/versions/3.1[234]*/bin/python3; do
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$p"
      return
    fi
  done
  die "needs Python >= 3.12 (python3.12 on PATH, or pyenv install 3.12)"
}

# install_pinned EXECUTABLE DISTRIBUTION PIP_SPEC: a fresh venv unless EXECUTABLE is there and
# DISTRIBUTION is at $VERSION already.
install_pinned() {
  local exe="$1" dist="$2" spec="$3" py start
  if [ -x "$VENV/bin/$exe" ] &&
     [ "$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null)" = "$VERSION" ]; then
    return
  fi
  py="$(find_python)"
  log "installing $spec into $VENV (with $py)"
  start=$(date +%s)
  rm -rf "$VENV"
  mkdir -p "$VENV_ROOT"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$spec" >&2
  log "installed in $(( $(date +%s) - start )) s"
}
