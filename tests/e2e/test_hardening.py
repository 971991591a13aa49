"""Hardening (issue 15), end to end against a real Doorman:

- no open redirector (RFC 9700 §4.11.2): an invalid authorization request from a dynamically
  registered client is shown a page, not sent to a redirect URI anyone could have registered;
  operator-configured clients, and clients the person already approved, still get the error
  redirect RFC 6749 §4.1.2.1 describes;
- concurrent wrong passwords cannot outrun the lockout, and the right password sent right after
  is refused (`429` with `Retry-After`);
- one person's stateful sessions are capped (`server.max_sessions_per_person`);
- a method name a client invents never becomes a metrics label.
"""

from __future__ import annotations

import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlparse

import httpx2
import pytest

from conftest import ACCEPT_BOTH
from oauth import Browser, accounts_doorman, add_user, forms_of, pkce, query_of

pytestmark = pytest.mark.timeout(300)

PASSWORD = "hardening-" + secrets.token_urlsafe(12)
CONFIGURED = "https://configured.example/cb"


@pytest.fixture(scope="module")
def d(py_upstream):
    doorman = accounts_doorman(
        "hardening", [{"name": "py", "url": py_upstream.url}],
        sign_in={"max_failed_sign_ins": 5, "lockout": "10m"},
        server={"max_sessions_per_person": 2},
        extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                   f'redirect_uris = ["{CONFIGURED}"]\n')
    for user in ("alice", "bob", "carol"):
        add_user(doorman, user, PASSWORD)
    yield doorman
    doorman.stop()


def register(d, name: str) -> dict:
    r = httpx2.post(f"{d.base}/oauth/register", timeout=30, json={
        "client_name": name, "redirect_uris": [f"https://{name}.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "none"})
    assert r.status_code == 201, r.text
    return r.json()


def authorize_url(d, client_id: str, redirect_uri: str, **params) -> str:
    _, challenge = pkce()
    q = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
         "code_challenge": challenge, "code_challenge_method": "S256", "state": "st",
         "resource": d.url, "scope": "mcp", **params}
    return f"{d.base}/oauth/authorize?" + urlencode({k: v for k, v in q.items() if v is not None})


INVALID = [({"response_type": "token"}, "unsupported_response_type"),
           ({"scope": "mcp admin"}, "invalid_scope"),
           ({"code_challenge_method": "plain"}, "invalid_request"),
           ({"prompt": "none"}, "login_required")]


@pytest.mark.parametrize("override,error", INVALID, ids=[e for _, e in INVALID])
def test_errors_for_a_registered_client_are_not_redirected_for_anyone(d, override, error):
    """Anyone can register https://attacker.example/cb: an invalid request must not turn
    Doorman into a redirector to it. The page says what was wrong and links nowhere."""
    reg = register(d, f"attacker-{error.replace('_', '-')}")
    r = httpx2.get(authorize_url(d, reg["client_id"], reg["redirect_uris"][0], **override), timeout=30)
    assert r.status_code == 400 and "location" not in r.headers, (r.status_code, r.headers.get("location"))
    assert error in r.text, r.text[:500]
    assert "example/cb" not in r.text, "the page does not offer the redirect URI either"
    # The operator's own client: the error goes back, as RFC 6749 §4.1.2.1 says.
    r = httpx2.get(authorize_url(d, "configured", CONFIGURED, **override), timeout=30)
    assert r.status_code in (302, 303), (r.status_code, r.text[:200])
    q = query_of(r.headers["location"])
    assert r.headers["location"].startswith(CONFIGURED) and q["error"] == [error], r.headers["location"]
    assert q["state"] == ["st"] and q["iss"] == [d.base]


def test_errors_go_back_to_a_registered_client_the_person_approved(d):
    reg = register(d, "approved")
    redirect = reg["redirect_uris"][0]
    b = Browser(d)
    try:
        location = b.authorize(authorize_url(d, reg["client_id"], redirect), "carol", PASSWORD)
        assert "code" in query_of(location), location
        # Signed in, and carol approved this client: its errors are redirected to it.
        r = b.get(authorize_url(d, reg["client_id"], redirect, response_type="token"))
        assert r.status_code in (302, 303) and r.headers["location"].startswith(redirect), r.headers
        assert query_of(r.headers["location"])["error"] == ["unsupported_response_type"]
    finally:
        b.close()
    # The same request from a browser that is nobody's: a page.
    r = httpx2.get(authorize_url(d, reg["client_id"], redirect, response_type="token"), timeout=30)
    assert r.status_code == 400 and "location" not in r.headers


def sign_in_post(d, jar: httpx2.Client, username: str, password: str) -> httpx2.Response:
    """One POST of the sign-in form of a fresh authorization request (its own CSRF cookie)."""
    r = jar.get(authorize_url(d, "configured", CONFIGURED))
    assert r.status_code == 303, r.text[:200]
    page = jar.get(f"{d.base}{r.headers['location']}")
    form = next(f for f in forms_of(page.text) if "password" in f.fields)
    return jar.post(f"{d.base}/sign-in", data={**form.fields, "username": username, "password": password})


def test_concurrent_wrong_passwords_cannot_outrun_the_lockout(d):
    """39 wrong passwords at once for an account locked after 5 failures: at most 5 are
    checked, and the right password right after is refused with 429 and Retry-After."""
    jars = [httpx2.Client(timeout=60, follow_redirects=False) for _ in range(40)]
    try:
        with ThreadPoolExecutor(max_workers=39) as pool:
            answers = list(pool.map(lambda i: sign_in_post(d, jars[i], "alice", f"wrong-{i}"), range(39)))
        statuses = [a.status_code for a in answers]
        checked = [a for a in answers if a.status_code == 401]
        assert len(checked) <= 5, statuses
        assert all(s in (401, 429) for s in statuses), statuses
        assert all(a.headers.get("retry-after", "").isdigit() for a in answers if a.status_code == 429)
        right = sign_in_post(d, jars[39], "alice", PASSWORD)
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0, right.status_code
        assert "Too many failed attempts" in right.text
    finally:
        for j in jars:
            j.close()


def token_for(d, user: str) -> str:
    from oauth import pkce as make_pkce
    verifier, challenge = make_pkce()
    b = Browser(d)
    try:
        loc = b.authorize(authorize_url(d, "configured", CONFIGURED, code_challenge=challenge), user, PASSWORD)
    finally:
        b.close()
    r = httpx2.post(f"{d.base}/oauth/token", timeout=30, data={
        "grant_type": "authorization_code", "code": query_of(loc)["code"][0], "code_verifier": verifier,
        "redirect_uri": CONFIGURED, "client_id": "configured"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def initialize(d, token: str) -> httpx2.Response:
    return httpx2.post(d.url, timeout=30, headers={**ACCEPT_BOTH, "Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})


def test_one_persons_sessions_are_capped_and_others_are_not_affected(d):
    bob = token_for(d, "bob")
    first, second = initialize(d, bob), initialize(d, bob)
    assert first.status_code == 200 and second.status_code == 200
    third = initialize(d, bob)
    assert third.status_code == 429, third.text
    err = third.json()["error"]
    assert err["data"] == {"reason": "too_many_sessions", "limit": 2}, err
    assert "server.max_sessions_per_person" in err["message"]
    # Someone else is not affected; ending one of bob's makes room.
    assert initialize(d, token_for(d, "carol")).status_code == 200
    sid = first.headers["mcp-session-id"]
    gone = httpx2.delete(d.url, timeout=30, headers={"Authorization": f"Bearer {bob}", "mcp-session-id": sid,
                                                     "mcp-protocol-version": "2025-11-25"})
    assert gone.status_code == 200
    assert initialize(d, bob).status_code == 200


def test_invented_method_names_never_become_metrics_labels(d):
    carol = token_for(d, "carol")
    sid = initialize(d, carol).headers["mcp-session-id"]
    invented = f"x-{secrets.token_hex(6)}/probe"
    r = httpx2.post(d.url, timeout=30, json={"jsonrpc": "2.0", "id": 2, "method": invented},
                    headers={**ACCEPT_BOTH, "Authorization": f"Bearer {carol}", "mcp-session-id": sid,
                             "mcp-protocol-version": "2025-11-25"})
    assert r.json()["error"]["code"] == -32601, r.text
    metrics = httpx2.get(f"{d.base}/metrics", timeout=30).text
    assert invented not in metrics
    assert not re.search(r'method="x-', metrics), "no label minted from input"


# ---------------------------------------------------------------------------------------------
# Slow clients (server.header_read_timeout, server.body_read_timeout)

@pytest.fixture(scope="module")
def impatient(py_upstream):
    doorman = accounts_doorman("hardening-slow", [{"name": "py", "url": py_upstream.url}],
                               server={"header_read_timeout": "2s", "body_read_timeout": "2s"},
                               extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                                          f'redirect_uris = ["{CONFIGURED}"]\n')
    add_user(doorman, "alice", PASSWORD)
    yield doorman
    doorman.stop()


def raw_connection(d):
    import socket
    host, port = urlparse(d.base).hostname, urlparse(d.base).port
    s = socket.create_connection((host, port), timeout=15)
    return s


def read_until_closed(s, limit: float = 15.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    import time
    start, data = time.monotonic(), b""
    s.settimeout(limit)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def test_a_client_trickling_its_headers_is_cut_off(impatient):
    s = raw_connection(impatient)
    try:
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        data, took = read_until_closed(s)
    finally:
        s.close()
    assert took < 10, f"held open {took:.1f}s"
    assert b"HTTP/1.1 2" not in data, data


def test_a_client_trickling_its_body_gets_408_and_the_connection_closes(impatient):
    token = token_for(impatient, "alice").encode()
    for auth, status in ((b"", b"401"), (b"Authorization: Bearer not-a-token\r\n", b"401"),
                         (b"Authorization: Bearer " + token + b"\r\n", b"408")):
        s = raw_connection(impatient)
        try:
            s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n" + auth +
                      b"\r\n{\"jsonrpc\": ")
            data, took = read_until_closed(s)
        finally:
            s.close()
        assert took < 10, f"held open {took:.1f}s"
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        # Without a valid token: refused at the bearer check, whose body drain stops at the limit.
        # With one: the endpoint's own read gives up with 408. Either way the connection closes.
        assert head.startswith(b"http/1.1 " + status) and b"connection: close" in head, data[:300]


def test_an_idle_keep_alive_connection_is_closed(impatient):
    s = raw_connection(impatient)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, took = read_until_closed(s)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert took < 10, f"an idle connection stayed open {took:.1f}s"


def test_metrics_can_require_a_bearer_token(py_upstream):
    token = secrets.token_urlsafe(24)
    d = accounts_doorman("hardening-metrics", [{"name": "py", "url": py_upstream.url}],
                         server={"metrics_token_env": "HARDENING_METRICS_TOKEN"},
                         env={"HARDENING_METRICS_TOKEN": token})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-" + token}, {"Authorization": token}):
            r = httpx2.get(f"{d.base}/metrics", headers=headers, timeout=30)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), headers
            assert "doorman_" not in r.text
        r = httpx2.get(f"{d.base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and "doorman_" in r.text, r.text[:200]
    finally:
        d.stop()
    # A configured variable that is not set stops Doorman at start, naming the key.
    import subprocess
    from conftest import DOORMAN_BIN
    cfg = d.dir / "doorman.toml"
    out = subprocess.run([str(DOORMAN_BIN), "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "server.metrics_token_env" in (out.stdout + out.stderr), out


# ---------------------------------------------------------------------------------------------
# Upstream-driven discovery (an upstream's 401 names the metadata Doorman then fetches)

class ChallengingUpstream:
    """An MCP endpoint that answers every request 401 with a `resource_metadata` challenge, and
    serves the protected resource metadata it names (pointing wherever the test says): an
    upstream turned hostile, which no real peer can be asked to be."""

    def __init__(self, authorization_server: str, metadata_url: str | None = None,
                 registration_endpoint: str | None = None):
        """`authorization_server="self"`: the upstream is its own authorization server, whose
        metadata offers dynamic registration at `registration_endpoint`."""
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from procs import free_port
        self.port = free_port()
        base = f"http://127.0.0.1:{self.port}"
        self.url = f"{base}/mcp"
        metadata = metadata_url or f"{base}/.well-known/oauth-protected-resource/mcp"
        if authorization_server == "self":
            authorization_server = base
        prm = {"resource": self.url, "authorization_servers": [authorization_server]}
        as_metadata = {"issuer": base, "authorization_endpoint": f"{base}/authorize",
                       "token_endpoint": f"{base}/token", "registration_endpoint": registration_endpoint,
                       "code_challenge_methods_supported": ["S256"]}
        self.hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                hits.append(self.path)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._send(401, {"error": "unauthorized"},
                           [("WWW-Authenticate", f'Bearer resource_metadata="{metadata}"')])

            def do_GET(self):
                hits.append(self.path)
                if self.path.startswith("/.well-known/oauth-protected-resource"):
                    self._send(200, prm)
                elif self.path.startswith("/.well-known/oauth-authorization-server"):
                    self._send(200, as_metadata)
                else:
                    self._send(404, {})

            def log_message(self, *args):
                pass

        hits = self.hits
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("as_url,metadata_url", [
    ("https://10.0.0.7", None),
    ("http://169.254.169.254/latest", None),
    ("https://as.example", "https://10.0.0.7/.well-known/oauth-protected-resource"),
], ids=["private-as", "metadata-service-as", "private-metadata"])
def test_discovery_never_fetches_internal_addresses_and_errors_do_not_reveal_them(as_url, metadata_url):
    up = ChallengingUpstream(as_url, metadata_url)
    d = accounts_doorman("hardening-discovery", [{"name": "crm", "url": up.url}],
                         extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                                    f'redirect_uris = ["{CONFIGURED}"]\n')
    try:
        add_user(d, "alice", PASSWORD)
        token = token_for(d, "alice")
        r = httpx2.post(d.url, timeout=60, headers={**ACCEPT_BOTH, "Authorization": f"Bearer {token}",
                                                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                                                   "mcp-name": "crm_x"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                            "name": "crm_x", "arguments": {},
                            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                      "io.modelcontextprotocol/clientCapabilities": {}}}})
        body = r.json()
        err = body.get("error") or {}
        assert err.get("data", {}).get("reason") == "authorization_unavailable", body
        for secret_place in ("10.0.0.7", "169.254", "as.example", "127.0.0.1"):
            assert secret_place not in r.text, (secret_place, r.text)
        log = d.log()
        assert ("10.0.0.7" in log or "169.254.169.254" in log), "the operator is told where"
    finally:
        d.stop()
        up.stop()


@pytest.mark.parametrize("registration_endpoint,refusal", [
    ("https://10.0.0.7/register", "resolves to a private address (10.0.0.7)"),
    ("http://169.254.169.254/latest/register", "resolves to a link-local address (169.254.169.254)"),
    ("https://user:pw@as.example/register", "must not contain a user name or password"),
], ids=["private", "metadata-service", "userinfo"])
def test_registration_at_a_discovered_server_goes_through_the_ssrf_guard(registration_endpoint, refusal):
    """The registration endpoint comes from metadata an upstream pointed to: it is called under
    the same rules as the metadata fetches (public addresses after DNS, https, no userinfo),
    and the client is not told the address."""
    up = ChallengingUpstream("self", registration_endpoint=registration_endpoint)
    d = accounts_doorman("hardening-registration", [{"name": "crm", "url": up.url}],
                         extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                                    f'redirect_uris = ["{CONFIGURED}"]\n')
    try:
        add_user(d, "alice", PASSWORD)
        token = token_for(d, "alice")
        r = httpx2.post(d.url, timeout=60, headers={**ACCEPT_BOTH, "Authorization": f"Bearer {token}",
                                                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                                                   "mcp-name": "crm_x"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                            "name": "crm_x", "arguments": {},
                            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                      "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert r.json()["error"]["data"]["reason"] == "authorization_unavailable", r.text
        for secret_place in ("10.0.0.7", "169.254", "as.example", "user:pw"):
            assert secret_place not in r.text, (secret_place, r.text)
        # The metadata was read (so it was the registration that was refused), and the log
        # tells the operator which rule refused it.
        assert any(h.startswith("/.well-known/oauth-authorization-server") for h in up.hits), up.hits
        assert refusal in d.log(), d.log()[-3000:]
    finally:
        d.stop()
        up.stop()


def test_an_upstream_cannot_pass_itself_off_as_a_configured_resource():
    """Its metadata names the authorization server of a resource the operator configured:
    refused before anything is fetched or registered there."""
    up = ChallengingUpstream("https://notes-as.example")
    d = accounts_doorman("hardening-claim", [{"name": "crm", "url": up.url}],
                         extra_toml=f'\n[[sign_in.clients]]\nclient_id = "configured"\nname = "Configured"\n'
                                    f'redirect_uris = ["{CONFIGURED}"]\n'
                                    '\n[[resources]]\nname = "notes"\nissuer = "https://notes-as.example"\n'
                                    'client_id = "doorman"\n')
    try:
        add_user(d, "alice", PASSWORD)
        token = token_for(d, "alice")
        r = httpx2.post(d.url, timeout=60, headers={**ACCEPT_BOTH, "Authorization": f"Bearer {token}",
                                                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                                                   "mcp-name": "crm_x"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                            "name": "crm_x", "arguments": {},
                            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                      "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert r.json()["error"]["data"]["reason"] == "authorization_unavailable", r.text
        assert 'authorization server of the configured resource "notes"' in d.log(), d.log()[-2000:]
    finally:
        d.stop()
        up.stop()
