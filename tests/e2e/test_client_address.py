"""The client's address behind a load balancer (`server.trusted_proxies`), end to end.

Only a peer listed in `trusted_proxies` is believed when it says whom it forwarded a request for
(in `X-Forwarded-For`, or RFC 7239 `Forwarded` with `forwarded_header = "forwarded"`); the address it names is what the registration quota
counts and what audit records and log lines carry. Any other peer is its own client, whatever
headers it sends. Loopback has many addresses: the "load balancer" sends from 127.0.0.9, a
client that reaches Doorman directly from 127.0.0.10.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from urllib.parse import urlencode

import httpx2
import pytest

from conftest import modern_headers, modern_request, rpc_json
from oauth import Browser, accounts_doorman, add_user, forms_of, pkce, query_of

pytestmark = pytest.mark.timeout(300)

PASSWORD = "proxies-" + secrets.token_urlsafe(12)
CONFIGURED = "https://configured.example/cb"
PROXY, DIRECT = "127.0.0.9", "127.0.0.10"


@pytest.fixture(scope="module")
def d(py_upstream):
    doorman = accounts_doorman(
        "proxies", [{"name": "py", "url": py_upstream.url}],
        sign_in={"registrations_per_hour": 2},
        server={"trusted_proxies": [PROXY, "127.0.1.0/24"]},
        extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                   f'redirect_uris = ["{CONFIGURED}"]\n')
    add_user(doorman, "alice", PASSWORD)
    yield doorman
    doorman.stop()


def from_address(address: str) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.HTTPTransport(local_address=address), timeout=30, follow_redirects=False)


def register(c: httpx2.Client, d, headers: dict) -> httpx2.Response:
    return c.post(f"{d.base}/oauth/register", headers=headers, json={
        "client_name": "behind-a-proxy", "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"})


def rows(d, sql: str, *args) -> list[dict]:
    db = sqlite3.connect(f"file:{d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def audit_rows_eventually(d, event: str, count: int) -> list[dict]:
    """The audit writer stores records in the background, in batches gathered for 50 ms."""
    deadline = time.monotonic() + 10
    while True:
        found = rows(d, "SELECT * FROM audit_events WHERE event = ? ORDER BY id", event)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_the_registration_quota_counts_the_forwarded_client_only_behind_a_trusted_proxy(d):
    with from_address(PROXY) as proxy, from_address(DIRECT) as direct:
        # Two clients behind the load balancer: each has its own budget of two an hour.
        for client in ("203.0.113.1", "203.0.113.2"):
            statuses = [register(proxy, d, {"X-Forwarded-For": client}).status_code for _ in range(3)]
            assert statuses == [201, 201, 429], (client, statuses)
        # A client that put a fake address first: the load balancer appended the real one, and
        # the client is the first hop that is not a trusted proxy, from the nearest.
        r = register(proxy, d, {"X-Forwarded-For": "203.0.113.1, 198.51.100.7, 127.0.1.5"})
        assert r.status_code == 201, r.text
        assert rows(d, "SELECT registered_from FROM oauth_clients WHERE client_id = ?",
                    r.json()["client_id"]) == [{"registered_from": "198.51.100.7"}]
        # Only the header the proxy sets counts (X-Forwarded-For by default): a client's own
        # `Forwarded`, which the proxy passes through untouched, names nobody.
        r = register(proxy, d, {"Forwarded": "for=192.0.2.200", "X-Forwarded-For": "198.51.100.8"})
        assert r.status_code == 201, r.text
        assert rows(d, "SELECT registered_from FROM oauth_clients WHERE client_id = ?",
                    r.json()["client_id"]) == [{"registered_from": "198.51.100.8"}]
        # A peer that is not a trusted proxy is its own client: a new forged address each time
        # buys nothing.
        statuses = [register(direct, d, {"X-Forwarded-For": f"192.0.2.{i}"}).status_code for i in range(3)]
        assert statuses == [201, 201, 429], statuses
        assert {r["registered_from"] for r in rows(
            d, "SELECT registered_from FROM oauth_clients WHERE name = 'behind-a-proxy'")} == {
            "203.0.113.1", "203.0.113.2", "198.51.100.7", "198.51.100.8", DIRECT}


def sign_in_post(d, c: httpx2.Client, headers: dict, password: str) -> httpx2.Response:
    _, challenge = pkce()
    q = {"response_type": "code", "client_id": "configured", "redirect_uri": CONFIGURED, "code_challenge": challenge,
         "code_challenge_method": "S256", "state": "st", "resource": d.url, "scope": "mcp"}
    r = c.get(f"{d.base}/oauth/authorize?{urlencode(q)}", headers=headers)
    assert r.status_code == 303, r.text[:200]
    page = c.get(f"{d.base}{r.headers['location']}", headers=headers)
    form = next(f for f in forms_of(page.text) if "password" in f.fields)
    return c.post(f"{d.base}/sign-in", headers=headers,
                  data={**form.fields, "username": "alice", "password": password})


def test_audit_records_and_log_lines_carry_the_resolved_client_address(d):
    before = len(audit_rows_eventually(d, "sign_in_failed", 0))
    with from_address(PROXY) as proxy, from_address(DIRECT) as direct:
        assert sign_in_post(d, proxy, {"X-Forwarded-For": "203.0.113.77"}, "wrong").status_code == 401
        assert sign_in_post(d, direct, {"X-Forwarded-For": "203.0.113.78"}, "wrong").status_code == 401
    failed = audit_rows_eventually(d, "sign_in_failed", before + 2)[before:]
    assert [r["client_address"] for r in failed] == ["203.0.113.77", DIRECT], failed
    # A tool call through the load balancer: its one record names the forwarded client.
    verifier, challenge = pkce()
    b = Browser(d)
    try:
        q = {"response_type": "code", "client_id": "configured", "redirect_uri": CONFIGURED,
             "code_challenge": challenge, "code_challenge_method": "S256", "state": "st", "resource": d.url,
             "scope": "mcp"}
        loc = b.authorize(f"{d.base}/oauth/authorize?{urlencode(q)}", "alice", PASSWORD)
    finally:
        b.close()
    token = httpx2.post(f"{d.base}/oauth/token", timeout=30, data={
        "grant_type": "authorization_code", "code": query_of(loc)["code"][0], "code_verifier": verifier,
        "redirect_uri": CONFIGURED, "client_id": "configured"}).json()["access_token"]
    calls_before = len(audit_rows_eventually(d, "tools/call", 0))
    with from_address(PROXY) as proxy:
        # A plain answer, then one streamed after progress notifications (its call ends while
        # the event stream is being sent, outside the request's handler).
        for name, arguments, meta, client in (("py_add", {"a": 1, "b": 2}, {}, "203.0.113.79"),
                                              ("py_progress", {"steps": 2}, {"progressToken": "p1"}, "203.0.113.80")):
            h = {**modern_headers("tools/call", name), "Authorization": f"Bearer {token}", "X-Forwarded-For": client}
            r = proxy.post(d.url, headers=h, json=modern_request("tools/call", {
                "name": name, "arguments": arguments, "_meta": meta}))
            assert r.status_code == 200, r.text
            assert "error" not in rpc_json(r), r.text
            if meta:
                assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    calls = audit_rows_eventually(d, "tools/call", calls_before + 2)[calls_before:]
    assert [(c["name"], c["client_address"]) for c in calls] == [
        ("py_add", "203.0.113.79"), ("py_progress", "203.0.113.80")], calls
    # The audit log line says it too.
    log = d.log()
    assert "203.0.113.77" in log and "203.0.113.79" in log
    assert "203.0.113.78" not in log, "a forged address from an untrusted peer reached the log"


def test_a_config_entry_that_is_not_an_address_names_its_key(tmp_path):
    import subprocess

    from conftest import DOORMAN_BIN
    config = tmp_path / "doorman.toml"
    config.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8", "lb.internal"]\n')
    out = subprocess.run([str(DOORMAN_BIN), "serve", "--config", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0
    assert "server.trusted_proxies[1]" in out.stderr and "lb.internal" in out.stderr, out.stderr
