"""Layer 1 for operators: the first-run setup link, `doorman keys rotate`, `doorman grants` and
`doorman clients` against a running Doorman (accounts mode)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from urllib.parse import urlencode

import httpx2
import pytest

from conftest import DOORMAN_BIN
from oauth import Browser, accounts_doorman, add_user, forms_of, pkce, query_of

CLIENT = "ops-test-client"
REDIRECT = "http://127.0.0.1/callback"
CLIENTS_TOML = f"""
[[sign_in.clients]]
client_id = "{CLIENT}"
name = "Operations test client"
redirect_uris = ["{REDIRECT}"]
"""


def cli(d, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DOORMAN_BIN), *args, "--config", str(d.config)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def tokens_for(d, username: str, password: str) -> dict:
    """The whole authorization code flow with PKCE through the real pages; returns the token response."""
    verifier, challenge = pkce()
    query = urlencode({"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT,
                       "code_challenge": challenge, "code_challenge_method": "S256", "state": "s1",
                       "resource": f"{d.base}/mcp"})
    b = Browser(d)
    try:
        back = b.authorize(f"{d.base}/oauth/authorize?{query}", username, password)
    finally:
        b.close()
    q = query_of(back)
    assert q["iss"] == [d.base] and q["state"] == ["s1"], back
    r = httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": CLIENT})
    assert r.status_code == 200, r.text
    return r.json()


def mcp_status(d, access_token: str) -> int:
    r = httpx2.post(d.url, headers={"Authorization": f"Bearer {access_token}",
                                    "Accept": "application/json, text/event-stream",
                                    "Content-Type": "application/json"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": "ops", "version": "0"}}})
    return r.status_code


def wait_for_status(d, token: str, status: int, within: float = 10.0) -> int:
    """Revocations made by another process reach the server within its poll interval (2 s)."""
    deadline = time.monotonic() + within
    while True:
        got = mcp_status(d, token)
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_first_run_prints_a_one_time_setup_link(py_upstream):
    d = accounts_doorman("doorman-first-run", [{"name": "py", "url": py_upstream.url}], extra_toml=CLIENTS_TOML)
    try:
        deadline = time.monotonic() + 10
        link = None
        while link is None and time.monotonic() < deadline:
            m = re.search(re.escape(d.base) + r"/setup\?token=[A-Za-z0-9_-]+", d.log())
            link = m and m.group(0)
            time.sleep(0.1)
        assert link, d.log()
        b = Browser(d)
        page = b.get(link)
        assert page.status_code == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        form = next(f for f in forms_of(page.text) if "password" in f.fields)
        # A form posted without the browser's CSRF cookie is refused and creates nobody.
        bare = httpx2.post(f"{d.base}/setup", data={**form.fields, "username": "mallory", "password": "x" * 12})
        assert bare.status_code == 400
        r = b.submit(link, form, {"username": "root", "password": "a long admin password", "email": "root@example.com"})
        # Created, signed in, on to the administrators' page (test_console.py follows it there).
        assert r.status_code == 303 and r.headers["location"] == "/admin?welcome=1", (r.status_code, r.text)
        users = json.loads(cli(d, "users", "list", "--json").stdout)
        assert [(u["username"], u["admin"]) for u in users] == [("root", True)]
        # The link works once.
        again = b.get(link)
        assert again.status_code == 404
        b.close()
        # The administrator signs in like anyone else.
        tokens = tokens_for(d, "root", "a long admin password")
        assert mcp_status(d, tokens["access_token"]) == 200
    finally:
        d.stop()


@pytest.fixture(scope="module")
def ops(py_upstream):
    d = accounts_doorman("doorman-ops", [{"name": "py", "url": py_upstream.url}], extra_toml=CLIENTS_TOML)
    add_user(d, "alice", "alice's long password", email="alice@example.com")
    add_user(d, "bob", "bob's long password")
    yield d
    d.stop()


def test_keys_rotate_keeps_old_tokens_valid(ops):
    before = tokens_for(ops, "alice", "alice's long password")
    old_kids = {k["kid"] for k in httpx2.get(f"{ops.base}/oauth/jwks.json").json()["keys"]}
    out = cli(ops, "keys", "rotate")
    assert out.returncode == 0, out.stderr
    new_kid = re.search(r"new signing key (\S+);", out.stdout).group(1)
    assert new_kid not in old_kids
    # The running server picks the new key up; both keys are published meanwhile.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        kids = {k["kid"] for k in httpx2.get(f"{ops.base}/oauth/jwks.json").json()["keys"]}
        if new_kid in kids:
            break
        time.sleep(0.5)
    assert kids >= old_kids | {new_kid}
    assert mcp_status(ops, before["access_token"]) == 200
    after = tokens_for(ops, "alice", "alice's long password")
    header = json.loads(base64.urlsafe_b64decode(after["access_token"].split(".")[0] + "=="))
    assert header["kid"] == new_kid
    assert mcp_status(ops, after["access_token"]) == 200


def test_grants_are_listed_and_revoked_by_operators(ops):
    tokens = tokens_for(ops, "bob", "bob's long password")
    listed = json.loads(cli(ops, "grants", "list", "--user", "bob", "--json").stdout)
    assert listed and all(g["user"] == "bob" and g["client_id"] == CLIENT for g in listed)
    assert any(g["state"] == "active" for g in listed)
    out = cli(ops, "grants", "revoke", "--user", "bob")
    assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
    # The access token stops working (the server reads revocations from the store) ...
    assert wait_for_status(ops, tokens["access_token"], 401) == 401
    # ... and the refresh token too.
    r = httpx2.post(f"{ops.base}/oauth/token", data={"grant_type": "refresh_token",
                                                      "refresh_token": tokens["refresh_token"], "client_id": CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    listed = json.loads(cli(ops, "grants", "list", "--user", "bob", "--json").stdout)
    assert all(g["state"] == "revoked" for g in listed)


def test_disabling_a_person_ends_their_access(ops):
    add_user(ops, "carol", "carol's long password")
    tokens = tokens_for(ops, "carol", "carol's long password")
    assert mcp_status(ops, tokens["access_token"]) == 200
    out = cli(ops, "users", "disable", "carol")
    assert out.returncode == 0, out.stderr
    assert wait_for_status(ops, tokens["access_token"], 401) == 401


def test_clients_list_and_revoke(ops):
    r = httpx2.post(f"{ops.base}/oauth/register", json={"redirect_uris": ["http://127.0.0.1/cb"],
                                                          "token_endpoint_auth_method": "none", "client_name": "Temp"})
    assert r.status_code == 201, r.text
    cid = r.json()["client_id"]
    listed = json.loads(cli(ops, "clients", "list", "--json").stdout)
    kinds = {c["client_id"]: c["kind"] for c in listed}
    assert kinds[CLIENT] == "configured" and kinds[cid] == "dynamic"
    out = cli(ops, "clients", "revoke", cid)
    assert out.returncode == 0, out.stderr
    page = httpx2.get(f"{ops.base}/oauth/authorize", params={"client_id": cid, "redirect_uri": "http://127.0.0.1/cb"})
    assert page.status_code == 400 and "revoked" in page.text
    bad = cli(ops, "clients", "revoke", "no-such-client")
    assert bad.returncode != 0 and "no such client" in bad.stderr


def test_consent_is_remembered_unless_the_client_asks_again(ops):
    add_user(ops, "dora", "dora's long password")

    def consent_pages(extra: dict) -> int:
        verifier, challenge = pkce()
        query = urlencode({"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT,
                           "code_challenge": challenge, "code_challenge_method": "S256", "state": "s", **extra})
        b = Browser(ops)
        try:
            back = b.authorize(f"{ops.base}/oauth/authorize?{query}", "dora", "dora's long password")
        finally:
            b.close()
        assert "code" in query_of(back), back
        return sum(1 for p in b.pages if p.status_code == 200 and p.request.url.path == "/consent")

    assert consent_pages({}) == 1
    assert consent_pages({}) == 0, "approved once, remembered"
    assert consent_pages({"prompt": "consent"}) == 1, "prompt=consent asks again"


def test_sign_in_grants_and_key_rotation_on_postgresql(py_upstream):
    """Layer 1 on the multi-node engine: the same flow, the CLI on the shared store, and a key
    rotated by the CLI picked up by the running server."""
    from conftest import fresh_postgres_url
    d = accounts_doorman("doorman-ops-postgres", [{"name": "py", "url": py_upstream.url}],
                         extra_toml=CLIENTS_TOML, server={"database_url": fresh_postgres_url()})
    try:
        add_user(d, "erin", "erin's long password")
        tokens = tokens_for(d, "erin", "erin's long password")
        assert mcp_status(d, tokens["access_token"]) == 200
        listed = json.loads(cli(d, "grants", "list", "--json").stdout)
        assert [g["user"] for g in listed] == ["erin"] and listed[0]["state"] == "active"
        r = httpx2.post(f"{d.base}/oauth/token", data={"grant_type": "refresh_token",
                                                        "refresh_token": tokens["refresh_token"], "client_id": CLIENT})
        assert r.status_code == 200, r.text
        assert cli(d, "keys", "rotate").returncode == 0
        assert cli(d, "grants", "revoke", "--user", "erin").returncode == 0
        assert wait_for_status(d, r.json()["access_token"], 401) == 401
    finally:
        d.stop()


def test_a_used_setup_link_says_how_to_add_another_administrator(py_upstream):
    """The page tells the truth: a restart prints a new link only while no account exists; the
    command that always works is shown as code, not as Markdown backticks."""
    d = accounts_doorman("doorman-ops-used-link", [{"name": "py", "url": py_upstream.url}])
    try:
        r = httpx2.get(f"{d.base}/setup?token=FORGED", timeout=30)
        assert r.status_code == 404, r.status_code
        assert "<code>doorman users add NAME --admin --password-stdin --config /path/to/doorman.toml</code>" in r.text, r.text
        assert "`" not in r.text
        assert "if no account exists yet" in r.text
    finally:
        d.stop()
