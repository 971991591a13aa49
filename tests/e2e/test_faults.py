"""Faults under load, in short form (`scripts/faults` runs the same cases for longer and prints
the figures): a node killed with SIGKILL behind nginx, PostgreSQL restarted under the nodes, a
single SQLite node killed mid-write and started again.

What must hold, whatever fails: every call a client got an answer to has its audit record
(`[audit] durable`, the default, releases an answer only once its record is stored); nothing
committed is lost; the other nodes carry on and only requests in flight at the moment of the
fault fail; the nodes come back by themselves. Figures land in tests/artifacts/faults.json."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from types import SimpleNamespace

import httpx2
import pytest

from balancer import NGINX, Nginx
from conftest import DOORMAN_BIN, fresh_postgres_url, modern_headers, modern_request
from oauth import accounts_doorman, add_user
from procs import ARTIFACTS, ROOT, Proc, free_port, wait_http
from test_cluster import psql
from test_operators import CLIENTS_TOML, tokens_for

PASSWORD = "alice's long password"
# The short form's bounds (scripts/faults passes longer ones through these variables).
LOAD_SECONDS = float(os.environ.get("DOORMAN_FAULT_SECONDS", "1.5"))
THREADS = int(os.environ.get("DOORMAN_FAULT_THREADS", "4"))


def figures(case: str, values: dict) -> None:
    path = ARTIFACTS / "faults.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[case] = values
    path.write_text(json.dumps(data, indent=1))
    print(f"\nfaults {case}: {values}")


class Load:
    """`threads` clients calling `py_add` through `url` as fast as answers come, each call with
    its own W3C trace id (the audit's `request_id`), until stopped. Every call is kept:
    (trace id, when it started, "ok" or why it failed)."""

    def __init__(self, url: str, token: str, threads: int = THREADS):
        self.url, self.token = url, token
        self.calls: list[tuple[str, float, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        with httpx2.Client(timeout=30) as http:
            while not self.stopping.is_set():
                trace = secrets.token_hex(16)
                headers = modern_headers("tools/call", "py_add") | {
                    "Authorization": f"Bearer {self.token}", "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"}
                body = modern_request("tools/call", {"name": "py_add", "arguments": {"a": 1, "b": 2}})
                started = time.monotonic()
                try:
                    r = http.post(self.url, headers=headers, json=body)
                    ok = r.status_code == 200 and "result" in r.json() and not r.json()["result"].get("isError")
                    outcome = "ok" if ok else f"status {r.status_code}: {r.text[:120]}"
                except (httpx2.TransportError, ValueError) as e:
                    outcome = f"{type(e).__name__}"
                with self.lock:
                    self.calls.append((trace, started, outcome))

    def stop(self) -> list[tuple[str, float, str]]:
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        return self.calls

    def answered(self) -> set[str]:
        return {t for t, _, o in self.calls if o == "ok"}


def audited_traces_pg(url: str) -> set[str]:
    out = psql(url, "SELECT request_id FROM audit_events WHERE event = 'tools/call' AND request_id IS NOT NULL")
    return set(out.split())


class Nodes:
    """Three nodes on one PostgreSQL behind nginx, with the Python upstream."""

    def __init__(self, py_upstream):
        self.pg = fresh_postgres_url()
        env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"}
        lb_port = free_port()
        server = {"database_url": self.pg, "public_url": f"http://127.0.0.1:{lb_port}"}
        self.nodes = [accounts_doorman(f"faults-{i}", [{"name": "py", "url": py_upstream.url}],
                                       extra_toml=CLIENTS_TOML, server=server, env=env) for i in range(3)]
        self.lb = Nginx("faults", [d.port for d in self.nodes], port=lb_port)
        add_user(self.nodes[0], "alice", PASSWORD)
        # Signed in through the balancer, as a client would (the public URL is its).
        self.token = tokens_for(SimpleNamespace(base=self.lb.base), "alice", PASSWORD)["access_token"]

    def stop(self):
        self.lb.stop()
        for d in self.nodes:
            d.stop()


@pytest.fixture
def nodes(py_upstream):
    if not NGINX.exists():
        pytest.fail("nginx is missing: scripts/setup-test-env installs it")
    n = Nodes(py_upstream)
    yield n
    n.stop()


def test_a_node_killed_under_load_loses_no_answered_call_and_the_others_carry_on(nodes):
    load = Load(f"{nodes.lb.base}/mcp", nodes.token)
    time.sleep(LOAD_SECONDS)
    nodes.nodes[1].proc.kill()  # SIGKILL: no shutdown, no flush
    killed_at = time.monotonic()
    time.sleep(LOAD_SECONDS)
    calls = load.stop()
    failed = [c for c in calls if c[2] != "ok"]
    after = [c for c in calls if c[1] > killed_at + 0.5]
    recorded = audited_traces_pg(nodes.pg)
    missing = load.answered() - recorded
    figures("node_killed", {"calls": len(calls), "failed": len(failed), "answered_unrecorded": len(missing),
                            "after_kill": len(after)})
    assert not missing, f"{len(missing)} answered calls have no audit record"
    # Only requests in flight at the kill fail: at most one per client thread.
    assert len(failed) <= THREADS, failed
    assert after and all(c[2] == "ok" for c in after), "the load carried on on the other nodes"


def test_postgresql_restarted_under_load_nodes_report_not_ready_and_recover_by_themselves(nodes):
    pg = ROOT / "scripts" / "pg"
    load = Load(f"{nodes.lb.base}/mcp", nodes.token)
    time.sleep(LOAD_SECONDS / 2)
    assert os.system(f"{pg} stop >/dev/null 2>&1") == 0
    down_at = time.monotonic()
    try:
        # Not ready while the store is down, and said within the load balancer's patience.
        started = time.monotonic()
        r = httpx2.get(f"{nodes.nodes[0].base}/readyz", timeout=5)
        took = time.monotonic() - started
        assert r.status_code == 503 and r.json()["status"] == "unavailable", r.text
        assert took < 3, took
        time.sleep(LOAD_SECONDS / 2)
    finally:
        out = os.popen(f"{pg} start 2>/dev/null").read()
        assert "postgres://" in out, out
    up_at = time.monotonic()
    # Every node is ready again without a restart.
    deadline = time.monotonic() + 30
    for d in nodes.nodes:
        while httpx2.get(f"{d.base}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"{d.base} did not recover"
            time.sleep(0.1)
    ready_at = time.monotonic()
    ready_after = ready_at - up_at
    time.sleep(LOAD_SECONDS)
    calls = load.stop()
    recorded = audited_traces_pg(nodes.pg)
    missing = load.answered() - recorded
    after = [c for c in calls if c[1] > ready_at]
    figures("postgres_restarted", {"calls": len(calls), "failed": len([c for c in calls if c[2] != "ok"]),
                                   "answered_unrecorded": len(missing), "down_s": round(up_at - down_at, 2),
                                   "ready_again_after_s": round(ready_after, 2)})
    assert not missing, f"{len(missing)} answered calls have no audit record"
    assert after and all(c[2] == "ok" for c in after), [c for c in after if c[2] != "ok"][:3]
    # The change listeners are back: a revocation on one node is heard by another at once.
    listening = psql(nodes.pg, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
                               "AND datname = current_database()")
    deadline = time.monotonic() + 10
    while int(listening) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        listening = psql(nodes.pg, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
                                   "AND datname = current_database()")
    assert int(listening) == 3, listening


def test_a_sqlite_node_killed_mid_write_restarts_consistent_with_every_answered_call(py_upstream):
    d = accounts_doorman("faults-sqlite", [{"name": "py", "url": py_upstream.url}], extra_toml=CLIENTS_TOML)
    try:
        add_user(d, "alice", PASSWORD)
        token = tokens_for(d, "alice", PASSWORD)["access_token"]
        load = Load(d.url, token)
        time.sleep(LOAD_SECONDS)
        d.proc.kill()
        calls = load.stop()
        # Started again on the same files.
        d.proc = Proc("faults-sqlite", [DOORMAN_BIN, "serve", "--config", d.config], env={"DOORMAN_TEST_CLOCK": "1"})
        wait_http(f"{d.base}/healthz", 20, d.proc)
        import sqlite3
        db = sqlite3.connect(f"file:{d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            recorded = {r[0] for r in db.execute(
                "SELECT request_id FROM audit_events WHERE event = 'tools/call' AND request_id IS NOT NULL")}
            grants = db.execute("SELECT count(*) FROM grants WHERE revoked_at IS NULL").fetchone()[0]
        finally:
            db.close()
        missing = load.answered() - recorded
        figures("sqlite_killed", {"calls": len(calls), "answered_unrecorded": len(missing)})
        assert not missing, f"{len(missing)} answered calls have no audit record"
        assert grants >= 1
        # The sign-in made before the kill still works.
        r = httpx2.post(d.url, headers=modern_headers("tools/list") | {"Authorization": f"Bearer {token}"},
                        json=modern_request("tools/list"))
        assert r.status_code == 200, r.text
    finally:
        d.stop()


# --- A resource's authorization server that hangs, resets or answers garbage -------------------


class FaultyProxy:
    """In front of an authorization server's token endpoint (a hand-written fault: the real
    server cannot be made to hang or reset on demand). `mode`: "pass" forwards the request;
    "hang" reads it and answers nothing until released; "reset" closes the connection with a
    TCP reset; "garbage" answers 200 with a page that is not JSON."""

    def __init__(self, target: str):
        import socket
        import struct
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode = "pass"
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if proxy.mode == "hang":
                    proxy.release.wait(60)
                    return
                if proxy.mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                if proxy.mode == "garbage":
                    data = b"<html><body>502 Bad Gateway (an appliance in the way)</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                r = httpx2.post(target, content=body, headers=headers, timeout=30)
                self.send_response(r.status_code)
                for k in ("content-type", "cache-control"):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.server.shutdown()


def test_an_authorization_server_that_hangs_resets_or_answers_garbage_gives_clear_errors_and_nothing_sticks():
    from idp import account, idp_client, resource_server, start_idp
    from oauth import advance_clock
    from resource_peers import start_resource_upstream
    from test_layer2 import IDP_ACCOUNTS, NOTES_SECRET, PASSWORD as L2_PASSWORD, connect_once, doorman_token, start_env

    port, notes_port = free_port(), free_port()
    audience = f"http://127.0.0.1:{notes_port}/mcp"
    idp = start_idp(clients=[idp_client("doorman-notes", NOTES_SECRET, [f"http://127.0.0.1:{port}/connect/callback"])],
                    accounts=[account(u, pw, email=email) for u, (pw, email) in IDP_ACCOUNTS.items()],
                    resource_server=resource_server(audience, access_token_ttl=600, always_refresh=True),
                    name="faults-as-idp")
    proxy = FaultyProxy(f"{idp.issuer}/token")
    notes = start_resource_upstream(notes_port, idp.issuer, audience, name="faults-as-notes")
    e = start_env("faults-as", binding="user", port=port, idp=idp, notes=notes,
                  extra=f'token_endpoint = "{proxy.url}"\n')
    try:
        add_user(e.d, "alice", L2_PASSWORD, email="alice@corp.example")
        token = doorman_token(e, "alice")
        connect_once(e, token)  # the code exchange went through the proxy

        def whoami() -> tuple[float, dict]:
            started = time.monotonic()
            r = httpx2.post(e.d.url, headers=modern_headers("tools/call", "notes_whoami") | {
                "Authorization": f"Bearer {token}"}, json=modern_request("tools/call", {"name": "notes_whoami",
                                                                                       "arguments": {}}), timeout=60)
            assert r.status_code == 200, r.text
            return time.monotonic() - started, r.json()

        answers, said = {}, {}
        for mode in ("hang", "reset", "garbage"):
            advance_clock(e.d, 700)  # the resource's access token (600 s) expired: a refresh is due
            proxy.mode = mode
            took, body = whoami()
            text = json.dumps(body)
            answers[mode] = round(took, 2)
            said[mode] = body.get("error", {}).get("message")
            # An answer, not a hang: an error that says the resource is not reachable now, not a
            # prompt to connect again (the connection is fine; the server is not).
            assert "error" in body, body
            err = body["error"]
            assert err["code"] == -32010, err
            assert err["data"] == {"resource": "notes", "reason": "authorization_server_unavailable"}, err
            assert err["message"].startswith("Notes could not renew your connection right now"), err
            assert "Your connection is kept" in err["message"] and "/connect/" not in text, err
            assert "Traceback" not in text and "<html>" not in text, text
            proxy.release.set()
            proxy.release.clear()
            # Nothing stuck: with the server back, the next call refreshes and works.
            proxy.mode = "pass"
            took_after, after = whoami()
            assert not after["result"].get("isError"), after
        figures("authorization_server_faults", {"seconds_to_answer": answers, "said": said})
        assert answers["hang"] >= 5, "the hang was waited for up to the request timeout, not cut short by luck"
    finally:
        e.d.stop()
        proxy.stop()
        notes.stop()
        idp.stop()
