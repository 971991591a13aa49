"""Shared fixtures: real upstreams (server-everything, the Python SDK fixture) and real Doorman
processes, each on a free loopback port. Doorman is the binary `scripts/test` built
(`DOORMAN_BIN`, default target/debug/doorman)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx2
import pytest

from procs import ROOT, Proc, free_port, start_everything, start_py_upstream, wait_http

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
DOORMAN_BIN = Path(os.environ.get("DOORMAN_BIN", TARGET / "debug" / "doorman"))

MODERN = "2026-07-28"
ACCEPT_BOTH = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def toml_inline(v) -> str:
    """A value as TOML: strings and numbers as JSON writes them, tables inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_inline(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_inline(x) for x in v) + "]"
    return json.dumps(v)


def toml_upstreams(upstreams: list[dict]) -> str:
    out = []
    for u in upstreams:
        out.append("[[upstreams]]")
        for k, v in u.items():
            out.append(f"{k} = {toml_inline(v)}")
    return "\n".join(out) + "\n"


class Doorman:
    """One `doorman serve` process with its own config and data directory."""

    def __init__(self, name: str, upstreams: list[dict], server: dict | None = None, env: dict | None = None,
                 sign_in: dict | None = None, extra_toml: str = "", port: int | None = None):
        """`sign_in` defaults to local mode (no sign-in); pass `{"mode": "accounts", ...}` for layer 1.
        `extra_toml` is appended verbatim (e.g. `[[sign_in.clients]]` tables). `port`: chosen in
        advance when a peer must know Doorman's URL before it starts (an SSO provider)."""
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"doorman-{name}-"))
        server = {"listen": f"127.0.0.1:{self.port}", "data_dir": str(self.dir / "data"), **(server or {})}
        sign_in = {"mode": "local", **(sign_in or {})}
        text = "[server]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
        text += "[sign_in]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sign_in.items())
        text += toml_upstreams(upstreams)
        text += extra_toml
        self.config = self.dir / "doorman.toml"
        self.config.write_text(text)
        self.proc = Proc(name, [DOORMAN_BIN, "serve", "--config", self.config], env=env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        try:
            wait_http(f"{self.base}/healthz", 20, self.proc)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log_text()


@pytest.fixture(scope="session")
def everything():
    port = free_port()
    proc = start_everything(port)
    proc.url = f"http://127.0.0.1:{port}/mcp"
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def py_upstream():
    port = free_port()
    proc = start_py_upstream(port)
    proc.url = f"http://127.0.0.1:{port}/mcp"
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(everything, py_upstream):
    """Doorman in front of server-everything (stateful upstream) and the Python fixture (modern)."""
    d = Doorman("doorman-main", [
        {"name": "everything", "url": everything.url},
        {"name": "py", "url": py_upstream.url},
    ])
    yield d
    d.stop()


@pytest.fixture
def http():
    with httpx2.Client(timeout=30) as c:
        yield c


def initialize(http, url: str, version: str = "2025-11-25") -> str:
    """Opens a stateful session with raw HTTP; returns its id."""
    r = http.post(url, headers=ACCEPT_BOTH, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    })
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    n = http.post(url, headers={**ACCEPT_BOTH, "mcp-session-id": sid, "mcp-protocol-version": version},
                  json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert n.status_code == 202
    return sid


def session_headers(sid: str, version: str = "2025-11-25") -> dict:
    return {**ACCEPT_BOTH, "mcp-session-id": sid, "mcp-protocol-version": version}


def modern_request(method: str, params: dict | None = None, rid=1, version: str = MODERN) -> dict:
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        **params.get("_meta", {}),
    }
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def modern_headers(method: str, name: str | None = None, version: str = MODERN) -> dict:
    h = {**ACCEPT_BOTH, "mcp-protocol-version": version, "mcp-method": method}
    if name is not None:
        h["mcp-name"] = name
    return h


def rpc_json(response) -> dict:
    """The JSON-RPC message of a response, whether it came as JSON or as SSE."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        finals = [m for m in messages if "result" in m or "error" in m]
        assert finals, response.text
        return finals[-1]
    return response.json()


def fresh_postgres_url() -> str:
    """A new, empty database on the test PostgreSQL (scripts/test starts it); its URL."""
    import glob
    import secrets
    import subprocess
    from urllib.parse import urlsplit

    url = os.environ.get("DOORMAN_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("DOORMAN_TEST_POSTGRES_URL is not set (scripts/test starts PostgreSQL)")
    parts = urlsplit(url)
    name = f"doorman_e2e_{secrets.token_hex(6)}"
    createdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/createdb"))
    assert createdb, "createdb not found (scripts/setup-test-env installs PostgreSQL)"
    subprocess.run([createdb[-1], "-h", parts.hostname, "-p", str(parts.port or 5432),
                    "-U", parts.username or "postgres", name], check=True, capture_output=True, timeout=60)
    return parts._replace(path=f"/{name}").geturl()


# --- The store check of the hostile-input matrix (test_oauth_negative.py, test_protocol_errors.py,
# test_hostile_inputs.py): a refused request changes nothing in Doorman's store. ----------------

import contextlib as _contextlib
import sqlite3 as _sqlite3
import time as _time

# How long the "after" snapshot waits: audit records are written in the background, in batches
# gathered for 50 ms (audit.rs), so a refusal that is audited lands in the store shortly after
# its answer. Without the wait an unexpected audit record would go unseen.
STORE_SETTLE_SECONDS = 0.12


def store_snapshot(d: Doorman) -> dict[str, list[dict]]:
    """Every table of the Doorman's SQLite store, each as its rows (column -> value) sorted: read
    through a fresh read-only connection, which sees what is still in the write-ahead log.
    `sqlite_sequence` (SQLite's AUTOINCREMENT counters) is left out: the tables it counts are
    compared themselves."""
    path = d.dir / "data" / "doorman.db"
    assert path.exists(), f"no store at {path}"
    db = _sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    db.row_factory = _sqlite3.Row
    try:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence' ORDER BY name")]
        return {t: sorted((dict(r) for r in db.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables}
    finally:
        db.close()


def doorman_now_ms(d: Doorman) -> int:
    """The Doorman's clock: its test clock when it has the hook (`POST /_test/clock` moving it by
    nothing answers `now_ms`), the system clock otherwise."""
    if getattr(d, "_test_clock_hook", True):
        try:
            r = httpx2.post(f"{d.base}/_test/clock", json={"advance_seconds": 0}, timeout=10)
        except httpx2.HTTPError:
            r = None
        if r is not None and r.status_code == 200:
            d._test_clock_hook = True
            return int(r.json()["now_ms"])
        d._test_clock_hook = False
    return int(_time.time() * 1000)


def store_changes(before: dict, after: dict, allow: dict[str, str] | None = None) -> dict[str, dict]:
    """Per table outside `allow`: the rows that went and the rows that came (the first few)."""
    allow = allow or {}
    unknown = set(allow) - set(before) - set(after)
    assert not unknown, f"allowed tables that do not exist: {unknown}"
    changes = {}
    for table in sorted(set(before) | set(after)):
        if table in allow:
            continue
        old, new = before.get(table, []), after.get(table, [])
        if old != new:
            changes[table] = {"gone": [r for r in old if r not in new][:3], "came": [r for r in new if r not in old][:3]}
    return changes


@_contextlib.contextmanager
def store_unchanged(d: Doorman, allow: dict[str, str] | None = None, settle: float = STORE_SETTLE_SECONDS):
    """Asserts that what runs inside changes nothing in `d`'s store, except the tables named in
    `allow` (table -> why its change is the intended record of the refusal).

    The audit writer is asynchronous both ways: the "after" snapshot waits `settle` seconds for
    records of what ran inside, and audit records stamped before the block began (`at` on the
    Doorman's clock) are the previous steps' records arriving late, not changes made inside."""
    before = store_snapshot(d)
    began = doorman_now_ms(d)
    _time.sleep(0.003)           # whatever runs inside is stamped after `began`
    yield
    _time.sleep(settle)
    after = store_snapshot(d)
    if "audit_events" in after:
        after["audit_events"] = [r for r in after["audit_events"]
                                 if r in before.get("audit_events", []) or r["at"] > began]
    changes = store_changes(before, after, allow)
    assert not changes, f"a refused request changed the store: {changes}"
