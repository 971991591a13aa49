"""Layer 1, the negative matrix: every way a request to Doorman's authorization server or to
`/mcp` can be wrong gets exactly the error that crates/doorman/src/sign_in/README.md (the
contract), the MCP authorization spec (2025-11-25) and the OAuth RFCs name, and changes nothing
it should not. The module ends with the secret scan: no access token, refresh token, code,
password or client secret seen by any test here appears in the Doorman's database files or log.

One Doorman for the module (accounts mode, development allowances, test clock on,
registrations_per_hour = 3) in front of the Python fixture upstream. Some tests move its clock
forward (expired code, expired access token, expired authorization request, lockout); every test
takes its own fresh codes and tokens, so no test depends on another's timing. Registrations come
from their own loopback source address (127.0.0.N) so each test has its own rate-limit budget.
The first-run link and `users disable` tests start their own short-lived Doormans (they need an
empty store, or a clock the CLI agrees with).

Each negative case has a positive twin (a control) somewhere in the module that differs only in
the one thing that is wrong, so a case can't pass because the feature is simply broken; page
errors must also name their reason.

Every refusal asserts three things: the exact HTTP status, the exact error (the OAuth `error`, the
`WWW-Authenticate` error, the JSON-RPC `code`, or a page's reason), and that nothing changed in
Doorman's store (`unchanged`, a snapshot of every SQLite table before and after the refused
request). The only tables a refusal may change are the intended records of that refusal, named
per case with their reason (the `SPENDS_CODE`, `COUNTS_FAILURE`, … allowances below). The Doorman
purges expired rows only at start (`purge_interval` 1 h) and keeps idle sessions for a day, so
no background clean-up runs inside a snapshot window after a test moved the clock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import socket
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from urllib.parse import quote, urlencode, urljoin, urlparse

import httpx2
import pytest

from conftest import (ACCEPT_BOTH, DOORMAN_BIN, initialize, modern_headers, modern_request, session_headers,
                      store_unchanged)
from oauth import (Browser, accounts_doorman, add_user, advance_clock, b64u, b64u_decode,
                   doorman_signing_key, forms_of, jwt_es256, jwt_parts, jwt_unsigned,
                   new_es256_key, pkce, query_of, set_cookies, www_authenticate)

# --- The Doorman's world ----------------------------------------------------------------------

CONF_SECRET_ENV = "DOORMAN_NEGATIVE_CONF_SECRET"
CONF_SECRET = "conf-" + secrets.token_urlsafe(32)
PASSWORDS = {user: f"{user}-" + secrets.token_urlsafe(18) for user in ("alice", "bob", "carol", "dave", "erin", "frank")}
LOOPBACK_PORT = 53123

# Pre-registered public clients, one per purpose: consent is remembered per (person, client), so
# the tests that must see a consent page use a client nobody approves anywhere else.
PUBLIC = {
    "loop": "http://127.0.0.1/callback",    # loopback: the port may differ (RFC 8252 §7.3)
    "web": "https://web.example/cb",
    "other": "https://other.example/cb",
    "deny": "https://deny.example/cb",        # only ever denied
    "consent-a": "https://consent-a.example/cb",
    "consent-b": "https://consent-b.example/cb",
    "pages": "https://pages.example/cb",
    "consent-replay": "https://consent-replay.example/cb",
    "consent-person": "https://consent-person.example/cb",
}
CONFIDENTIAL = {"conf": "https://conf.example/cb"}


def clients_toml() -> str:
    out = []
    for cid, uri in PUBLIC.items():
        out.append(f'[[sign_in.clients]]\nclient_id = "{cid}"\nname = "{cid} app"\nredirect_uris = ["{uri}"]\n')
    for cid, uri in CONFIDENTIAL.items():
        out.append(f'[[sign_in.clients]]\nclient_id = "{cid}"\nname = "{cid} app"\nredirect_uris = ["{uri}"]\n'
                   f'client_secret_env = "{CONF_SECRET_ENV}"\n')
    return "\n".join(out)


# Everything secret the module sees, by kind; the scan at the end looks for each of them.
SEEN: dict[str, set[str]] = defaultdict(set)
SEEN["password"].update(PASSWORDS.values())
SEEN["client_secret"].add(CONF_SECRET)
# Values that ARE expected in the database (the scan's controls): grant ids (`sid`) and the
# `jti` of revoked access tokens.
STORED: dict[str, set[str]] = defaultdict(set)


def record_tokens(body: dict) -> None:
    for kind in ("access_token", "refresh_token"):
        if body.get(kind):
            SEEN[kind].add(body[kind])
    if body.get("access_token"):
        STORED["sid"].add(jwt_parts(body["access_token"])[1]["sid"])


def record_registration(r: httpx2.Response) -> dict:
    reg = r.json() if r.status_code == 201 else {}
    for k in ("client_secret", "registration_access_token"):
        if reg.get(k):
            SEEN[k].add(reg[k])
    return reg


def harvest(browser: Browser) -> None:
    """The browser's sign-in cookie is a bearer credential too (stored hashed, README)."""
    for cookie in browser.http.cookies.jar:
        if cookie.name.endswith("doorman_session"):
            SEEN["browser_session"].add(cookie.value)


class DocServer:
    """Client ID Metadata Documents on http://127.0.0.1:<port>/ (development mode allows plain
    http on loopback). `docs` maps a path to (status, headers, body); `hits` lists fetched paths."""

    def __init__(self):
        self.docs: dict[str, tuple[int, dict, bytes]] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                status, headers, body = server.docs.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path

    def put_json(self, path: str, doc: dict, headers: dict | None = None) -> str:
        self.docs[path] = (200, headers or {}, json.dumps(doc).encode())
        return self.url(path)

    def stop(self):
        self.httpd.shutdown()


class Canary:
    """A TCP listener on every local address (IPv4 and IPv6) that only records who connected:
    a metadata-document URL naming one of this machine's private addresses must be refused
    before any connection is made."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.connections.append(peer)
            conn.close()

    def stop(self):
        self.sock.close()


def local_private_addresses() -> list[str]:
    """This machine's non-loopback addresses that an SSRF guard must refuse (private, reserved,
    documentation ranges)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for word in out.split():
        try:
            a = ip_address(word.split("%")[0])
        except ValueError:
            continue
        if not a.is_loopback and not a.is_link_local and a.is_private:
            found.append(str(a))
    return found


class Env:
    def __init__(self, d, docs: DocServer, canary: Canary):
        self.d = d
        self.base = d.base
        self.docs = docs
        self.canary = canary
        self.browsers: dict[str, Browser] = {}
        self.registered: dict[str, dict] = {}

    def browser(self, user: str) -> Browser:
        """The person's own browser, kept for the module: signs in once, then flows go straight
        through (consent is remembered per client)."""
        if user not in self.browsers:
            self.browsers[user] = Browser(self.d)
        return self.browsers[user]

    def register(self, name: str, **metadata) -> dict:
        """A dynamically registered client, registered once per module from 127.0.0.1."""
        if name not in self.registered:
            body = {"client_name": name, "redirect_uris": [f"https://{name}.example/cb"],
                    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                    **metadata}
            r = httpx2.post(f"{self.base}/oauth/register", json=body, timeout=30)
            assert r.status_code == 201, r.text
            self.registered[name] = record_registration(r)
        return self.registered[name]


@pytest.fixture(scope="module")
def env(py_upstream):
    docs, canary = DocServer(), Canary()
    d = accounts_doorman("doorman-oauth-negative", [{"name": "py", "url": py_upstream.url}],
                         sign_in={"registrations_per_hour": 3}, extra_toml=clients_toml(),
                         env={CONF_SECRET_ENV: CONF_SECRET}, server=QUIET_STORE)
    e = Env(d, docs, canary)
    try:
        for user in ("alice", "bob"):
            add_user(d, user, PASSWORDS[user])
        yield e
    finally:
        for b in e.browsers.values():
            b.close()
        d.stop()
        docs.stop()
        canary.stop()


# --- The store check -----------------------------------------------------------------------------

# No background writes inside a snapshot window: expired sign-in state is purged only at start,
# and sessions outlive every clock move of the module (the sweeper would delete them otherwise).
QUIET_STORE = {"purge_interval": "1h", "session_idle_timeout": "1d"}

# The tables a refusal may change, because that change is the refusal's intended record. A case
# names the allowances that apply to it; every other table must be exactly as it was.
# - A code presented at the token endpoint is spent, even when the exchange is then refused
#   (wrong verifier, redirect URI, client, resource, or expired): a code is good for one try
#   (RFC 6749 §10.5 single use; flow_tests.rs "a code tried once is spent, even with the wrong
#   verifier"), so a stolen code cannot be tried twice.
SPENDS_CODE = {"authorization_codes": "the presented code is spent by the refused exchange (single use)"}
# - A refused sign-in counts against the submitted name (the lockout, README "Pages and their
#   answers") and is audited as `sign_in_failed` (audit.rs: security events).
COUNTS_FAILURE = {"sign_in_failures": "the failed attempt is counted for the lockout",
                  "audit_events": "the failed sign-in is audited (sign_in_failed)"}
# - Dynamic registration counts every attempt that reaches the quota (a JSON object body),
#   refused ones included: the budget is taken before the registration is made (register.rs),
#   so a flood of invalid registrations is throttled like valid ones.
TAKES_QUOTA = {"registration_quota": "the attempt counts against the address's hourly registration budget"}
# - A replayed code or a reused refresh token revokes the grant (RFC 6749 §4.1.2, RFC 9700
#   §4.14.2): the revocation is the point of the refusal.
REVOKES_GRANT = {"grants": "the replay revokes the grant the first use created"}
# - A tool call refused by Doorman is audited like any other call.
AUDITED = {"audit_events": "the refused call is audited"}


def unchanged(e: "Env", *allowances: dict, settle: float | None = None):
    """The store check around one refused request: nothing changes but the allowed tables."""
    allow = {}
    for a in allowances:
        allow.update(a)
    return store_unchanged(e.d, allow) if settle is None else store_unchanged(e.d, allow, settle=settle)


def unchanged_sync(e: "Env", *allowances: dict):
    """The store check for the OAuth endpoints (/oauth/authorize, token, revoke, register, the
    metadata documents, /setup) and the bearer check in front of /mcp: none of them records an
    audit event (audit::emit is called by sign-in, consent, MCP calls and connections only), and
    everything else they write is written before they answer, so the "after" snapshot needs no
    wait for the background audit writer. Keeps the matrix fast."""
    return unchanged(e, *allowances, settle=0.0)


# --- Helpers: flows, tokens, /mcp ----------------------------------------------------------------

@dataclass
class Code:
    code: str
    verifier: str
    redirect_uri: str
    client_id: str


def authorize_url(e: Env, client_id: str, redirect_uri: str | None, challenge: str | None, state: str | None = None,
                  **params) -> str:
    """`/oauth/authorize` with a complete, valid request unless `params` overrides a parameter
    (None removes it)."""
    q = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
         "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
         "resource": e.d.url, "scope": "mcp", **params}
    return f"{e.base}/oauth/authorize?" + urlencode({k: v for k, v in q.items() if v is not None})


def redirect_uri_of(client_id: str) -> str:
    return {**PUBLIC, **CONFIDENTIAL}[client_id]


def code_for(e: Env, client_id: str, redirect_uri: str | None = None, user: str = "alice",
             browser: Browser | None = None, **params) -> Code:
    """A fresh authorization code for `client_id`, through the real sign-in and consent pages.
    Checks the authorization response itself: the client's redirect URI, `state`, and `iss`."""
    redirect_uri = redirect_uri or redirect_uri_of(client_id)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    b = browser or e.browser(user)
    location = b.authorize(authorize_url(e, client_id, redirect_uri, challenge, state, **params), user, PASSWORDS[user])
    harvest(b)
    assert location.split("?")[0] == redirect_uri, location
    q = query_of(location)
    assert "error" not in q, location
    assert q["state"] == [state] and q["iss"] == [e.base], location
    code = q["code"][0]
    SEEN["code"].add(code)
    return Code(code, verifier, redirect_uri, client_id)


def token_post(e: Env, data: dict, basic: tuple[str, str] | None = None) -> httpx2.Response:
    r = httpx2.post(f"{e.base}/oauth/token", data={k: v for k, v in data.items() if v is not None},
                    auth=basic, timeout=30)
    if r.status_code == 200:
        record_tokens(r.json())
    return r


def exchange(e: Env, c: Code, secret: str | None = None, how: str = "basic", **overrides) -> httpx2.Response:
    """The token request for code `c` (`how`: "basic" or "post" for confidential clients).
    `overrides` replaces form fields (None removes one)."""
    data = {"grant_type": "authorization_code", "code": c.code, "code_verifier": c.verifier,
            "redirect_uri": c.redirect_uri, "client_id": c.client_id, "resource": e.d.url}
    basic = None
    if secret is not None and how == "basic":
        basic = (c.client_id, secret)
        data["client_id"] = None
    elif secret is not None:
        data["client_secret"] = secret
    data.update(overrides)
    return token_post(e, data, basic)


def refresh(e: Env, client_id: str, refresh_token: str, secret: str | None = None, **overrides) -> httpx2.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **overrides}
    basic = None
    if secret is not None:
        basic = (client_id, secret)
        data["client_id"] = None
    return token_post(e, data, basic)


def tokens_for(e: Env, client_id: str, user: str = "alice") -> dict:
    """A full, successful sign-in at `client_id`: the token response."""
    c = code_for(e, client_id, user=user)
    r = exchange(e, c, secret=CONF_SECRET if client_id in CONFIDENTIAL else None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"].lower() == "bearer" and body["access_token"] and body["refresh_token"], body
    return body


def mcp_post(e: Env, token: str | None = None, url: str | None = None, headers: dict | None = None) -> httpx2.Response:
    """One stateless (2026-07-28) tools/list at /mcp."""
    h = modern_headers("tools/list")
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    return httpx2.post(url or e.d.url, headers=h, json=modern_request("tools/list"), timeout=30)


def assert_mcp_accepts(e: Env, token: str) -> None:
    r = mcp_post(e, token)
    assert r.status_code == 200, f"{r.status_code} {r.headers.get('www-authenticate')} {r.text[:300]}"


def assert_bearer_challenge(e: Env, r: httpx2.Response, error: str | None) -> None:
    """401 with `WWW-Authenticate: Bearer resource_metadata="…", scope="mcp"` and, for a token
    that was sent but is not good, `error="invalid_token"` (RFC 6750 §3, RFC 9728 §5.1)."""
    assert r.status_code == 401, f"{r.status_code} {r.text[:300]}"
    challenges = [www_authenticate(v) for v in r.headers.get_list("www-authenticate")]
    bearer = [p for scheme, p in challenges if scheme.lower() == "bearer"]
    assert len(bearer) == 1, r.headers.get_list("www-authenticate")
    p = bearer[0]
    assert p.get("resource_metadata") == f"{e.base}/.well-known/oauth-protected-resource/mcp", p
    assert p.get("scope") == "mcp", p
    if error is None:
        assert "error" not in p, p    # RFC 6750 §3.1: no error code when no credentials were sent
    else:
        assert p.get("error") == error, p


def assert_refused_within(e: Env, token: str, seconds: float) -> float:
    """Revocations made outside the token endpoint reach /mcp through the revocation poll (every
    2 s): the token must be refused within `seconds`. Returns how long it took."""
    start = time.monotonic()
    while mcp_post(e, token).status_code == 200 and time.monotonic() - start < seconds:
        time.sleep(0.2)
    assert_bearer_challenge(e, mcp_post(e, token), "invalid_token")
    return time.monotonic() - start


def assert_token_error(r: httpx2.Response, status: int, error: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    body = r.json()
    assert body.get("error") == error, body
    assert "no-store" in r.headers.get("cache-control", ""), r.headers
    return body


def page_text(r: httpx2.Response) -> str:
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", r.text, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def assert_error_page(r: httpx2.Response, *words: str, status: int = 400) -> None:
    """RFC 6749 §4.1.2.1: an error about the client or its redirect URI is shown to the person,
    never redirected to the (unverified) redirect URI. `words` must appear on the page (case
    aside): the page says which problem it is, so a refusal for another reason does not pass."""
    assert r.status_code == status, f"{r.status_code} {r.headers.get('location')} {r.text[:300]}"
    assert "location" not in r.headers, r.headers["location"]
    assert r.headers.get("content-type", "").startswith("text/html"), r.headers
    text = page_text(r)
    for w in words:
        assert w.lower() in text.lower(), (w, text[:400])


def assert_error_redirect(e: Env, r: httpx2.Response, redirect_uri: str, error: str, state: str) -> None:
    """The authorization error response (RFC 6749 §4.1.2.1) with `iss` (RFC 9207 §2)."""
    assert r.status_code in (302, 303), f"{r.status_code} {r.text[:300]}"
    location = r.headers["location"]
    assert location.split("?")[0] == redirect_uri, location
    q = query_of(location)
    assert q.get("error") == [error], location
    assert q.get("state") == [state], location
    assert q.get("iss") == [e.base], location
    assert "code" not in q, location


def get(url: str, **kw) -> httpx2.Response:
    return httpx2.get(url, timeout=30, follow_redirects=False, **kw)


# --- Metadata -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_protected_resource_metadata(env, path):
    r = get(env.base + path)
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["resource"] == f"{env.base}/mcp"
    assert m["authorization_servers"] == [env.base]
    assert m["scopes_supported"] == ["mcp"]
    assert m["bearer_methods_supported"] == ["header"]


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_authorization_server_metadata(env, path):
    r = get(env.base + path)
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["issuer"] == env.base                      # RFC 8414 §3.3: identical to the issuer
    assert m["authorization_endpoint"] == f"{env.base}/oauth/authorize"
    assert m["token_endpoint"] == f"{env.base}/oauth/token"
    assert m["registration_endpoint"] == f"{env.base}/oauth/register"
    assert m["revocation_endpoint"] == f"{env.base}/oauth/revoke"
    assert m["jwks_uri"] == f"{env.base}/oauth/jwks.json"
    assert m["code_challenge_methods_supported"] == ["S256"]
    assert m["client_id_metadata_document_supported"] is True
    assert m["authorization_response_iss_parameter_supported"] is True
    assert m["response_types_supported"] == ["code"]
    assert set(m["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert {"none", "client_secret_basic", "client_secret_post"} <= set(m["token_endpoint_auth_methods_supported"])


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp"])
def test_metadata_does_not_reflect_the_host_header(env, path):
    """The issuer and resource come from configuration (public_url), never from `Host`: a
    reflected Host would let a DNS-rebinding or cache-poisoning attacker name the issuer."""
    with unchanged_sync(env):
        r = get(env.base + path, headers={"Host": "evil.example"})
    assert r.status_code == 200, r.text
    assert "evil.example" not in r.text
    m = r.json()
    assert m.get("issuer", env.base) == env.base and m.get("resource", env.d.url) == env.d.url


def test_jwks_publishes_public_es256_keys_only(env):
    r = get(f"{env.base}/oauth/jwks.json")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys
    for k in keys:
        assert (k["kty"], k["crv"], k["alg"]) == ("EC", "P-256", "ES256"), k
        assert "d" not in k, "the JWKS publishes a private key"


# --- /oauth/authorize: errors shown as a page, never redirected ----------------------------------

@pytest.mark.parametrize("client_id,reason", [
    ("no-such-client", "unknown client"),
    (None, "client_id parameter is missing"),
    ("web\x00", "unknown client"),
    ("%FF%FE", "unknown client"),
    ("c" * 4000, "unknown client"),
    ("WEB", "unknown client"),
], ids=["unknown", "missing", "nul-byte", "invalid-utf8", "overlong", "other-case"])
def test_authorize_unknown_client_is_a_page(env, client_id, reason):
    """RFC 6749 §4.1.2.1: a missing or invalid client_id is shown as a page, never redirected.
    The control: every flow of the module with a registered client_id."""
    _, challenge = pkce()
    url = authorize_url(env, client_id or "web", "https://web.example/cb", challenge, "s1")
    if client_id is None:
        url = url.replace("client_id=web&", "")
    elif client_id == "%FF%FE":
        url = url.replace("client_id=%25FF%25FE", "client_id=%FF%FE")    # raw invalid UTF-8
    with unchanged_sync(env):
        r = get(url)
    assert_error_page(r, reason)


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/cb",
    "https://web.example/cb/more",
    "https://web.example/cb?x=1",
    "https://web.example/CB",
    "http://web.example/cb",
    "https://web.example.evil.example/cb",
    "https://web.example/cb#fragment",
    "https://attacker@web.example/cb",
    "https://web.example:8443/cb",
    "https://web.example/x/../cb",
    "https://web.example/cb?",
    "HTTPS://web.example/cb",
    "https://web.example./cb",
    "//web.example/cb",
    "https://web.example\\@evil.example/cb",
    "https://web.example/cb\x00",
    " https://web.example/cb",
    "https://web.example/cb%2F..%2F..%2Fevil",
    "",
], ids=["other-host", "longer-path", "extra-query", "case", "http-scheme", "suffix-host", "fragment", "userinfo",
        "other-port", "dot-segments", "empty-query", "scheme-case", "trailing-dot-host", "scheme-relative",
        "backslash-at", "nul-byte", "leading-space", "encoded-traversal", "empty"])
def test_authorize_unregistered_redirect_uri_is_a_page(env, redirect_uri):
    """OAuth 2.1 §4.1.1 / RFC 9700 §4.1.3: exact string matching; anything else is a page
    (RFC 6749 §4.1.2.1), never a redirect. The control: every flow of the module with the exact
    registered URI."""
    _, challenge = pkce()
    with unchanged_sync(env):
        r = get(authorize_url(env, "web", redirect_uri, challenge, "s2"))
    assert_error_page(r, "redirect_uri")


def test_loopback_redirect_port_may_differ(env):
    """RFC 8252 §7.3: registered `http://127.0.0.1/callback`, any port is the same redirect."""
    uri = f"http://127.0.0.1:{LOOPBACK_PORT}/callback"
    c = code_for(env, "loop", redirect_uri=uri)
    r = exchange(env, c)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("redirect_uri", [
    f"http://127.0.0.1:{LOOPBACK_PORT}/other",
    f"http://127.0.0.1:{LOOPBACK_PORT}/callback/x",
    f"http://localhost:{LOOPBACK_PORT}/callback",
    f"http://[::1]:{LOOPBACK_PORT}/callback",
    f"https://127.0.0.1:{LOOPBACK_PORT}/callback",
    f"http://127.0.0.1:{LOOPBACK_PORT}/callback?x=1",
    f"http://127.0.0.2:{LOOPBACK_PORT}/callback",
    f"http://127.0.0.1:{LOOPBACK_PORT}@evil.example/callback",
    f"http://evil.example@127.0.0.1:{LOOPBACK_PORT}/callback",
    "http://127.0.0.1:99999/callback",
    f"http://127.0.0.1:{LOOPBACK_PORT}/callback#x",
], ids=["other-path", "longer-path", "localhost-host", "ipv6-host", "https-scheme", "extra-query", "other-loopback-ip",
        "port-then-userinfo-host", "userinfo", "invalid-port", "fragment"])
def test_loopback_redirect_only_the_port_may_differ(env, redirect_uri):
    """RFC 8252 §7.3: only the port of a loopback redirect may differ from the registered one
    (RFC 9700 §4.1.3: exact matching otherwise). The control: test_loopback_redirect_port_may_differ."""
    _, challenge = pkce()
    with unchanged_sync(env):
        r = get(authorize_url(env, "loop", redirect_uri, challenge, "s3"))
    assert_error_page(r, "redirect_uri")


@pytest.mark.parametrize("param,registered_last", [
    ("redirect_uri", False), ("client_id", False), ("redirect_uri", True), ("client_id", True),
], ids=["redirect_uri", "client_id", "redirect_uri-registered-last", "client_id-registered-last"])
def test_authorize_duplicate_parameter(env, param, registered_last):
    """RFC 6749 §3.1: parameters MUST NOT be repeated. A repeated client_id or redirect_uri makes
    the client or its redirect URI invalid, which RFC 6749 §4.1.2.1 shows as a page and MUST NOT
    redirect, whichever of the values comes last (the attacker chooses the order)."""
    _, challenge = pkce()
    wrong = {"redirect_uri": "https://evil.example/cb", "client_id": "other"}[param]
    if registered_last:
        first = {"client_id": "web", "redirect_uri": PUBLIC["web"], param: wrong}
        url = authorize_url(env, first["client_id"], first["redirect_uri"], challenge, "dup")
        url += "&" + urlencode({param: {"redirect_uri": PUBLIC["web"], "client_id": "web"}[param]})
    else:
        url = authorize_url(env, "web", PUBLIC["web"], challenge, "dup") + "&" + urlencode({param: wrong})
    with unchanged_sync(env):
        r = get(url)
    assert not r.headers.get("location", "").startswith("https://evil.example"), r.headers.get("location")
    assert not r.headers.get("location", "").startswith(PUBLIC["other"]), r.headers.get("location")
    assert_error_page(r, param, "repeated")



# --- /oauth/authorize: errors redirected back with error + state + iss ----------------------------

AUTHORIZE_REDIRECTED = [
    # PKCE (MCP authorization "Authorization Code Protection": S256 required; RFC 7636 §4.2-4.4).
    ("no-code-challenge", {"code_challenge": None}, "invalid_request"),
    ("empty-code-challenge", {"code_challenge": ""}, "invalid_request"),
    ("plain", {"code_challenge_method": "plain"}, "invalid_request"),
    ("no-method-means-plain", {"code_challenge_method": None}, "invalid_request"),
    ("method-lowercase", {"code_challenge_method": "s256"}, "invalid_request"),
    ("unknown-method", {"code_challenge_method": "S512"}, "invalid_request"),
    ("challenge-42-chars", {"code_challenge": "A" * 42}, "invalid_request"),
    ("challenge-44-chars", {"code_challenge": "A" * 44}, "invalid_request"),
    ("challenge-128-chars", {"code_challenge": "A" * 128}, "invalid_request"),
    ("challenge-not-base64url", {"code_challenge": "+" * 21 + "/" * 21 + "="}, "invalid_request"),
    ("challenge-nul", {"code_challenge": "A" * 42 + "\x00"}, "invalid_request"),
    # response_type (RFC 6749 §4.1.2.1: a missing one is invalid_request, §3.1: empty = missing).
    ("response-type-token", {"response_type": "token"}, "unsupported_response_type"),
    ("response-type-code-token", {"response_type": "code token"}, "unsupported_response_type"),
    ("response-type-id-token", {"response_type": "id_token"}, "unsupported_response_type"),
    ("response-type-case", {"response_type": "CODE"}, "unsupported_response_type"),
    ("no-response-type", {"response_type": None}, "invalid_request"),
    ("empty-response-type", {"response_type": ""}, "invalid_request"),
    # RFC 8707 §2: an absolute URI without fragment, and here only {issuer}/mcp.
    ("foreign-resource", {"resource": "https://evil.example/mcp"}, "invalid_target"),
    ("resource-without-path", {"resource": "SELF_ROOT"}, "invalid_target"),
    ("relative-resource", {"resource": "/mcp"}, "invalid_target"),
    ("resource-with-fragment", {"resource": "SELF_MCP#frag"}, "invalid_target"),
    ("resource-with-query", {"resource": "SELF_MCP?x=1"}, "invalid_target"),
    ("resource-trailing-slash", {"resource": "SELF_MCP/"}, "invalid_target"),
    ("resource-other-port", {"resource": "http://127.0.0.1:1/mcp"}, "invalid_target"),
    ("resource-userinfo", {"resource": "http://evil@SELF_HOST/mcp"}, "invalid_target"),
    # Scopes: mcp and offline_access only (README "Scopes").
    ("unknown-scope", {"scope": "mcp admin"}, "invalid_scope"),
    ("scope-case", {"scope": "MCP"}, "invalid_scope"),
    ("scope-openid", {"scope": "openid"}, "invalid_scope"),
    ("scope-tab-separated", {"scope": "mcp\toffline_access"}, "invalid_scope"),
    ("scope-overlong", {"scope": "s" * 5000}, "invalid_scope"),
    # max_age (OpenID Connect Core §3.1.2.1): a number of seconds.
    ("max-age-word", {"max_age": "soon"}, "invalid_request"),
    ("max-age-negative", {"max_age": "-1"}, "invalid_request"),
]


@pytest.mark.parametrize("override,error", [pytest.param(o, err, id=i) for i, o, err in AUTHORIZE_REDIRECTED])
def test_authorize_error_is_redirected_with_iss(env, override, error):
    """Errors about the request itself (not the client or its redirect URI) go back to the
    registered redirect URI with error + state + iss (RFC 6749 §4.1.2.1, RFC 9207 §2). The
    control: code_for(), the same request with nothing wrong."""
    _, challenge = pkce()
    host = env.base.split("//", 1)[1]
    override = {k: (None if v is None else v.replace("SELF_ROOT", env.base).replace("SELF_MCP", env.d.url)
                    .replace("SELF_HOST", host)) for k, v in override.items()}
    if override.get("code_challenge_method") == "plain":
        challenge = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(8)
    with unchanged_sync(env):
        r = get(authorize_url(env, "web", PUBLIC["web"], challenge, state, **override))
    assert_error_redirect(env, r, PUBLIC["web"], error, state)


@pytest.mark.parametrize("param,value", [
    ("state", None), ("scope", "mcp"), ("code_challenge", None), ("response_type", "code"),
    ("code_challenge_method", "S256"), ("prompt", "login"),
])
def test_authorize_repeated_parameter_is_invalid_request(env, param, value):
    """RFC 6749 §3.1: request parameters MUST NOT be included more than once; §4.1.2.1:
    invalid_request, redirected (the client and its redirect URI are fine)."""
    _, challenge = pkce()
    state = secrets.token_urlsafe(8)
    value = {"state": state, "code_challenge": challenge}.get(param, value)
    extra = urlencode({param: value})
    if param == "prompt":          # not in the base request: the repetition is two of them
        extra += "&" + extra
    url = authorize_url(env, "web", PUBLIC["web"], challenge, state) + "&" + extra
    with unchanged_sync(env):
        r = get(url)
    assert_error_redirect(env, r, PUBLIC["web"], "invalid_request", state)


def test_authorize_second_resource_is_invalid_target(env):
    """RFC 8707 §2: `resource` MAY be repeated (several resources for one token); a request naming
    a resource the server cannot issue for is invalid_target, not a malformed request."""
    _, challenge = pkce()
    state = secrets.token_urlsafe(8)
    url = authorize_url(env, "web", PUBLIC["web"], challenge, state) + "&" + urlencode({"resource": "https://evil.example/mcp"})
    with unchanged_sync(env):
        r = get(url)
    assert_error_redirect(env, r, PUBLIC["web"], "invalid_target", state)


def test_user_denies_consent(env):
    """The person says no: access_denied with state and iss (RFC 6749 §4.1.2.1); the request is
    spent and the decision audited, and nothing is approved (no consent, no code, no grant)."""
    _, challenge = pkce()
    state = secrets.token_urlsafe(8)
    b = Browser(env.d)
    try:
        url = authorize_url(env, "deny", PUBLIC["deny"], challenge, state)
        r = b.get(url)
        while r.status_code in (302, 303):
            url = urljoin(url, r.headers["location"])
            r = b.get(url)
            if urlparse(url).path == "/sign-in":
                r = b.submit(url, sign_in_form(r), credentials())
        assert urlparse(url).path == "/consent" and r.status_code == 200, (url, r.status_code)
        with unchanged(env, {"authorization_requests": "the answered request is spent",
                             "audit_events": "the consent decision is audited"}):
            denied = b.submit(url, consent_form(r), {"decision": "deny"})
        harvest(b)
    finally:
        b.close()
    assert denied.status_code == 303, denied.status_code
    location = denied.headers["location"]
    assert location.split("?")[0] == PUBLIC["deny"]
    q = query_of(location)
    assert q.get("error") == ["access_denied"] and q.get("state") == [state] and q.get("iss") == [env.base], location
    assert "code" not in q



# --- /oauth/token: the authorization_code grant --------------------------------------------------

def test_token_without_code_verifier(env):
    c = code_for(env, "web")
    with unchanged_sync(env):
        assert_token_error(exchange(env, c, code_verifier=None), 400, "invalid_request")
    assert exchange(env, c).status_code == 200       # checked before the code is looked at


@pytest.mark.parametrize("kind", ["other-verifier", "the-challenge-itself", "42-chars", "129-chars",
                                  "not-unreserved", "nul-byte"])
def test_token_with_wrong_code_verifier(env, kind):
    """RFC 7636 §4.6: a verifier that does not hash to the challenge (malformed ones included,
    §4.1: 43-128 unreserved characters) is invalid_grant."""
    c = code_for(env, "web")
    wrong = {
        "other-verifier": secrets.token_urlsafe(48),
        "the-challenge-itself": base64.urlsafe_b64encode(hashlib.sha256(c.verifier.encode()).digest()).rstrip(b"=").decode(),
        "42-chars": c.verifier[:42],
        "129-chars": c.verifier + "A" * (129 - len(c.verifier)),
        "not-unreserved": c.verifier[:-1] + "+",
        "nul-byte": c.verifier[:-1] + "\x00",
    }[kind]
    with unchanged_sync(env, SPENDS_CODE):
        assert_token_error(exchange(env, c, code_verifier=wrong), 400, "invalid_grant")


def test_code_replay_fails_and_revokes_what_the_first_use_issued(env):
    c = code_for(env, "web")
    first = exchange(env, c)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert_mcp_accepts(env, tokens["access_token"])
    with unchanged_sync(env, REVOKES_GRANT):
        assert_token_error(exchange(env, c), 400, "invalid_grant")
    # README: a second use "revokes the grant the first use created" (RFC 6749 §4.1.2, OAuth 2.1 §4.1.2).
    assert_token_error(refresh(env, "web", tokens["refresh_token"]), 400, "invalid_grant")
    assert_bearer_challenge(env, mcp_post(env, tokens["access_token"]), "invalid_token")


@pytest.mark.parametrize("thief", ["other", "conf"])
def test_code_of_another_client(env, thief):
    c = code_for(env, "web")
    stolen = Code(c.code, c.verifier, c.redirect_uri, thief)
    with unchanged_sync(env, SPENDS_CODE):
        r = exchange(env, stolen, secret=CONF_SECRET if thief in CONFIDENTIAL else None)
        assert_token_error(r, 400, "invalid_grant")
    # The code is still good for its own client? Not asserted: either is defensible; the thief got nothing.


def test_expired_code(env):
    c = code_for(env, "web")
    advance_clock(env.d, 90)  # code_lifetime is 1 min
    with unchanged_sync(env, SPENDS_CODE):
        assert_token_error(exchange(env, c), 400, "invalid_grant")


@pytest.mark.parametrize("client_id,authorized,presented", [
    ("loop", f"http://127.0.0.1:{LOOPBACK_PORT}/callback", f"http://127.0.0.1:{LOOPBACK_PORT + 1}/callback"),
    ("web", PUBLIC["web"], PUBLIC["other"]),
], ids=["loopback-other-port", "other-uri"])
def test_token_redirect_uri_mismatch(env, client_id, authorized, presented):
    c = code_for(env, client_id, redirect_uri=authorized)
    with unchanged_sync(env, SPENDS_CODE):
        assert_token_error(exchange(env, c, redirect_uri=presented), 400, "invalid_grant")


@pytest.mark.parametrize("resource", ["https://evil.example/mcp", "/mcp", "SELF_MCP#frag", "SELF_MCP/"],
                         ids=["foreign", "relative", "fragment", "trailing-slash"])
def test_token_resource_mismatch(env, resource):
    """RFC 8707 §2.2: the resource of the token request must be the code's: invalid_target."""
    c = code_for(env, "web")
    with unchanged_sync(env, SPENDS_CODE):
        assert_token_error(exchange(env, c, resource=resource.replace("SELF_MCP", env.d.url)), 400, "invalid_target")


@pytest.mark.parametrize("grant_type,extra", [
    ("urn:example:unknown", {}),
    ("password", {"username": "alice", "password": PASSWORDS["alice"]}),
], ids=["unknown", "password"])
def test_unsupported_grant_types(env, grant_type, extra):
    """With the confidential client correctly authenticated, so the grant type is the only fault."""
    with unchanged_sync(env):
        r = token_post(env, {"grant_type": grant_type, "scope": "mcp", **extra}, basic=("conf", CONF_SECRET))
    assert_token_error(r, 400, "unsupported_grant_type")


def test_client_credentials_is_refused_to_a_client_people_sign_in_through(env):
    """RFC 6749 §5.2 `unauthorized_client`: the grant exists, for service clients only
    (tests/e2e/test_service_clients.py); a people's client, authenticated, gets no token of
    its own and nothing changes."""
    with unchanged_sync(env):
        r = token_post(env, {"grant_type": "client_credentials", "scope": "mcp"}, basic=("conf", CONF_SECRET))
    assert_token_error(r, 400, "unauthorized_client")


def test_token_request_must_be_form_encoded(env):
    """RFC 6749 §3.2: application/x-www-form-urlencoded; a JSON body is invalid_request."""
    c = code_for(env, "web")
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/token", timeout=30, json={
            "grant_type": "authorization_code", "code": c.code, "code_verifier": c.verifier,
            "redirect_uri": c.redirect_uri, "client_id": "web"})
    assert_token_error(r, 400, "invalid_request")
    assert exchange(env, c).status_code == 200      # nothing of the code was spent



def wrong_secret() -> str:
    value = "wrong-" + secrets.token_urlsafe(16)
    SEEN["client_secret"].add(value)     # a wrong secret must not be logged either
    return value


def test_confidential_client_wrong_secret_basic(env):
    c = code_for(env, "conf")
    with unchanged_sync(env):
        r = exchange(env, c, secret=wrong_secret(), how="basic")
    assert_token_error(r, 401, "invalid_client")
    scheme, _ = www_authenticate(r.headers.get("www-authenticate", ""))
    assert scheme.lower() == "basic", r.headers     # RFC 6749 §5.2: the scheme the client used


def test_confidential_client_wrong_secret_post(env):
    c = code_for(env, "conf")
    with unchanged_sync(env):
        assert_token_error(exchange(env, c, secret=wrong_secret(), how="post"), 401, "invalid_client")


def test_confidential_client_without_secret(env):
    c = code_for(env, "conf")
    with unchanged_sync(env):
        assert_token_error(exchange(env, c), 401, "invalid_client")
    # Client authentication comes first: the code was not spent, its client can still use it.
    assert exchange(env, c, secret=CONF_SECRET).status_code == 200


@pytest.mark.parametrize("how", ["basic", "post"])
def test_confidential_client_right_secret(env, how):
    """The control for the three cases above."""
    c = code_for(env, "conf")
    r = exchange(env, c, secret=CONF_SECRET, how=how)
    assert r.status_code == 200, r.text
    assert_mcp_accepts(env, r.json()["access_token"])


def test_token_responses_are_not_cached(env):
    c = code_for(env, "web")
    ok = exchange(env, c)
    assert ok.status_code == 200
    with unchanged_sync(env, REVOKES_GRANT):
        bad = exchange(env, c)
    assert_token_error(bad, 400, "invalid_grant")
    for r in (ok, bad):
        assert "no-store" in r.headers.get("cache-control", ""), (r.status_code, r.headers)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


# Token requests refused before the code is looked at: each gets the exact error, changes nothing,
# and the same code is then exchanged by its client (the control, which also proves the refused
# request spent nothing). `request(c)` gives (headers, body) for the code `c`.
def _form(c: Code, **over) -> dict:
    data = {"grant_type": "authorization_code", "code": c.code, "code_verifier": c.verifier,
            "redirect_uri": c.redirect_uri, "client_id": c.client_id}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


TOKEN_REFUSED_EARLY = [
    # RFC 6749 §3.2: application/x-www-form-urlencoded, parameters not repeated.
    ("no-content-type", lambda c: ({}, urlencode(_form(c)).encode()), 400, "invalid_request"),
    ("text-plain", lambda c: ({"Content-Type": "text/plain"}, urlencode(_form(c)).encode()), 400, "invalid_request"),
    ("multipart", lambda c: ({"Content-Type": "multipart/form-data; boundary=x"},
                             b"--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nauthorization_code\r\n--x--\r\n"),
     400, "invalid_request"),
    ("json-with-form-type", lambda c: (FORM, json.dumps(_form(c)).encode()), 400, "invalid_request"),
    ("empty-body", lambda c: (FORM, b""), 400, "invalid_request"),
    ("repeated-code", lambda c: (FORM, (urlencode(_form(c)) + "&code=" + secrets.token_urlsafe(8)).encode()), 400, "invalid_request"),
    ("repeated-grant-type", lambda c: (FORM, (urlencode(_form(c)) + "&grant_type=refresh_token").encode()), 400, "invalid_request"),
    ("repeated-client-id", lambda c: (FORM, (urlencode(_form(c)) + "&client_id=other").encode()), 400, "invalid_request"),
    ("repeated-verifier", lambda c: (FORM, (urlencode(_form(c)) + "&" + urlencode({"code_verifier": c.verifier})).encode()),
     400, "invalid_request"),
    # RFC 6749 §4.1.3 required parameters (§3.1: an empty value is an omitted one).
    ("no-grant-type", lambda c: (FORM, urlencode(_form(c, grant_type=None)).encode()), 400, "invalid_request"),
    ("empty-grant-type", lambda c: (FORM, urlencode(_form(c, grant_type="")).encode()), 400, "invalid_request"),
    ("no-code", lambda c: (FORM, urlencode(_form(c, code=None)).encode()), 400, "invalid_request"),
    ("empty-code", lambda c: (FORM, urlencode(_form(c, code="")).encode()), 400, "invalid_request"),
    ("no-redirect-uri", lambda c: (FORM, urlencode(_form(c, redirect_uri=None)).encode()), 400, "invalid_request"),
    ("empty-verifier", lambda c: (FORM, urlencode(_form(c, code_verifier="")).encode()), 400, "invalid_request"),
    # RFC 6749 §5.2 unsupported_grant_type.
    ("grant-type-case", lambda c: (FORM, urlencode(_form(c, grant_type="AUTHORIZATION_CODE")).encode()), 400, "unsupported_grant_type"),
    ("grant-type-implicit", lambda c: (FORM, urlencode(_form(c, grant_type="implicit")).encode()), 400, "unsupported_grant_type"),
    ("grant-type-device", lambda c: (FORM, urlencode(_form(c, grant_type="urn:ietf:params:oauth:grant-type:device_code")).encode()),
     400, "unsupported_grant_type"),
    ("grant-type-jwt-bearer", lambda c: (FORM, urlencode(_form(c, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")).encode()),
     400, "unsupported_grant_type"),
    ("grant-type-token-exchange", lambda c: (FORM, urlencode(_form(c, grant_type="urn:ietf:params:oauth:grant-type:token-exchange")).encode()),
     400, "unsupported_grant_type"),
    # RFC 6749 §2.3, §3.2.1, §5.2: client authentication, 401 invalid_client (with the Basic
    # challenge whenever the request carried an Authorization header).
    ("no-client-id", lambda c: (FORM, urlencode(_form(c, client_id=None)).encode()), 401, "invalid_client"),
    ("unknown-client", lambda c: (FORM, urlencode(_form(c, client_id="no-such-client")).encode()), 401, "invalid_client"),
    ("client-id-nul", lambda c: (FORM, urlencode(_form(c, client_id="web\x00")).encode()), 401, "invalid_client"),
    ("public-client-with-secret", lambda c: (FORM, urlencode(_form(c, client_secret="guess")).encode()), 401, "invalid_client"),
    ("basic-not-base64", lambda c: ({**FORM, "Authorization": "Basic !!!"}, urlencode(_form(c)).encode()), 401, "invalid_client"),
    ("basic-without-colon", lambda c: ({**FORM, "Authorization": "Basic " + base64.b64encode(b"web").decode()},
                                      urlencode(_form(c)).encode()), 401, "invalid_client"),
    ("basic-invalid-utf8", lambda c: ({**FORM, "Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
                                     urlencode(_form(c)).encode()), 401, "invalid_client"),
    ("bearer-scheme", lambda c: ({**FORM, "Authorization": "Bearer " + secrets.token_urlsafe(16)}, urlencode(_form(c)).encode()),
     401, "invalid_client"),
    ("basic-other-client-than-body", lambda c: ({**FORM, "Authorization": basic("other", "x")}, urlencode(_form(c)).encode()),
     401, "invalid_client"),
]


@pytest.mark.parametrize("request_of,status,error", [pytest.param(f, s, e, id=i) for i, f, s, e in TOKEN_REFUSED_EARLY])
def test_token_request_refused_before_the_code_is_spent(env, request_of, status, error):
    c = code_for(env, "web")
    headers, body = request_of(c)
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/token", headers=headers, content=body, timeout=30)
    assert_token_error(r, status, error)
    if status == 401 and "Authorization" in headers:
        assert www_authenticate(r.headers.get("www-authenticate", ""))[0].lower() == "basic", r.headers
    assert exchange(env, c).status_code == 200     # the control: the code is intact


@pytest.mark.parametrize("over", [
    {"client_secret": "CONF"},                      # Basic and client_secret together (RFC 6749 §2.3)
    {"client_id": "web"},                           # body client_id naming another client than Basic
], ids=["basic-and-post", "basic-and-other-body-client"])
def test_confidential_client_two_credentials(env, over):
    c = code_for(env, "conf")
    data = {**_form(c, client_id=None), **{k: (CONF_SECRET if v == "CONF" else v) for k, v in over.items()}}
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/token", headers={**FORM, "Authorization": basic("conf", CONF_SECRET)},
                        content=urlencode(data).encode(), timeout=30)
    assert_token_error(r, 401, "invalid_client")
    assert exchange(env, c, secret=CONF_SECRET).status_code == 200


@pytest.mark.parametrize("code", ["UNKNOWN", "\x00", "c" * 5000, "%FF%FE"], ids=["unknown", "nul-byte", "overlong", "invalid-utf8"])
def test_token_with_a_code_never_issued(env, code):
    """RFC 6749 §5.2 invalid_grant; an unknown code spends nothing."""
    raw = "%FF%FE" if code == "%FF%FE" else quote(secrets.token_urlsafe(32) if code == "UNKNOWN" else code, safe="")
    body = urlencode({"grant_type": "authorization_code", "code_verifier": pkce()[0], "redirect_uri": PUBLIC["web"],
                      "client_id": "web"}) + "&code=" + raw
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/token", headers=FORM, content=body.encode(), timeout=30)
    assert_token_error(r, 400, "invalid_grant")


@pytest.mark.parametrize("endpoint", ["token", "revoke"])
def test_oauth_body_over_the_limit(env, endpoint):
    """A body of 3 MiB: refused as too large (RFC 9110 §15.5.14) with the endpoint's JSON error
    (RFC 6749 §5.2 / RFC 7009 §2.2.1: `error`, no-store), never a bare text answer."""
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/{endpoint}", headers=FORM, content=b"token=" + b"x" * (3 * 1024 * 1024), timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert r.headers.get("content-type", "").startswith("application/json"), (r.headers, r.text[:200])
    assert_token_error(r, 413, "invalid_request")


# --- /oauth/token: the refresh_token grant -------------------------------------------------------

def test_refresh_rotates(env):
    """The control for the reuse cases: a refresh works once, and gives a new refresh token."""
    t = tokens_for(env, "web")
    r = refresh(env, "web", t["refresh_token"])
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert t2["refresh_token"] != t["refresh_token"]
    assert_mcp_accepts(env, t2["access_token"])


def test_refresh_token_reuse_revokes_the_grant(env):
    t1 = tokens_for(env, "web")
    r = refresh(env, "web", t1["refresh_token"])
    assert r.status_code == 200, r.text
    t2 = r.json()
    with unchanged_sync(env, REVOKES_GRANT):
        assert_token_error(refresh(env, "web", t1["refresh_token"]), 400, "invalid_grant")
    # The whole grant is gone: the newest refresh token and the newest access token too.
    assert_token_error(refresh(env, "web", t2["refresh_token"]), 400, "invalid_grant")
    assert_bearer_challenge(env, mcp_post(env, t2["access_token"]), "invalid_token")


def test_refresh_token_of_another_client(env):
    """RFC 6749 §6: the refresh token must have been issued to the authenticated client:
    invalid_grant. The refused request issues no new refresh token, so it must not spend the old
    one (§6: the old token may be revoked only "after issuing a new refresh token"), which would
    make its own client's next refresh look like a reuse and end the grant."""
    t = tokens_for(env, "web")
    with unchanged_sync(env):
        assert_token_error(refresh(env, "other", t["refresh_token"]), 400, "invalid_grant")
    assert refresh(env, "web", t["refresh_token"]).status_code == 200     # its own client: fine


def test_confidential_clients_refresh_token_presented_by_a_public_client(env):
    """A stolen refresh token of a confidential client, presented without its secret under a public
    client's id: invalid_grant, and the victim's grant lives on (the thief has no secret)."""
    t = tokens_for(env, "conf")
    with unchanged_sync(env):
        assert_token_error(refresh(env, "web", t["refresh_token"]), 400, "invalid_grant")
    assert refresh(env, "conf", t["refresh_token"], secret=CONF_SECRET).status_code == 200


def test_confidential_refresh_without_secret(env):
    t = tokens_for(env, "conf")
    with unchanged_sync(env):
        assert_token_error(refresh(env, "conf", t["refresh_token"]), 401, "invalid_client")
    assert refresh(env, "conf", t["refresh_token"], secret=CONF_SECRET).status_code == 200


@pytest.mark.parametrize("override,error", [
    ({"resource": "https://evil.example/mcp"}, "invalid_target"),
    ({"resource": "/mcp"}, "invalid_target"),
    ({"scope": "mcp admin"}, "invalid_scope"),
    ({"scope": "MCP"}, "invalid_scope"),
], ids=["foreign-resource", "relative-resource", "wider-scope", "scope-case"])
def test_refresh_cannot_change_audience_or_widen_scope(env, override, error):
    """RFC 8707 §2.2 / RFC 6749 §6. A client that asked wrongly keeps its sign-in: the refused
    refresh spends nothing (RFC 6749 §6 revokes the old token only after issuing a new one)."""
    t = tokens_for(env, "web")
    with unchanged_sync(env):
        assert_token_error(refresh(env, "web", t["refresh_token"], **override), 400, error)
    assert refresh(env, "web", t["refresh_token"]).status_code == 200


@pytest.mark.parametrize("token", ["UNKNOWN", "\x00", "r" * 5000], ids=["unknown", "nul-byte", "overlong"])
def test_refresh_with_an_unknown_token(env, token):
    with unchanged_sync(env):
        assert_token_error(refresh(env, "web", secrets.token_urlsafe(32) if token == "UNKNOWN" else token),
                           400, "invalid_grant")


@pytest.mark.parametrize("body", ["missing", "empty", "repeated"])
def test_refresh_malformed_request(env, body):
    """RFC 6749 §6: refresh_token is required, once (§3.2)."""
    t = tokens_for(env, "web")
    text = urlencode({"grant_type": "refresh_token", "client_id": "web"})
    if body == "empty":
        text += "&refresh_token="
    elif body == "repeated":
        text += ("&" + urlencode({"refresh_token": t["refresh_token"]})) * 2
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/token", headers=FORM, content=text.encode(), timeout=30)
    assert_token_error(r, 400, "invalid_request")
    assert refresh(env, "web", t["refresh_token"]).status_code == 200


def race(n: int, fn) -> list:
    """Runs `fn()` n times at once (threads released together); returns the results."""
    barrier = threading.Barrier(n)

    def go():
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: go(), range(n)))


def test_code_exchanged_concurrently_gives_one_grant_at_most(env):
    c = code_for(env, "web")
    results = race(6, lambda: exchange(env, c))
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) <= 1, [r.status_code for r in results]
    for r in results:
        if r.status_code != 200:
            assert_token_error(r, 400, "invalid_grant")


def test_refresh_token_used_concurrently_rotates_once_at_most(env):
    t = tokens_for(env, "web")
    results = race(6, lambda: refresh(env, "web", t["refresh_token"]))
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) <= 1, [r.status_code for r in results]
    for r in results:
        if r.status_code != 200:
            assert_token_error(r, 400, "invalid_grant")


# --- /oauth/revoke ------------------------------------------------------------------------------

def revoke(e: Env, token: str, client_id: str, hint: str | None = None) -> httpx2.Response:
    data = {"token": token, "client_id": client_id}
    if hint:
        data["token_type_hint"] = hint
    return httpx2.post(f"{e.base}/oauth/revoke", data=data, timeout=30)


def test_revoked_refresh_token(env):
    """After RFC 7009 revocation the refresh token is invalid_grant, and the refused refresh
    changes nothing more (the grant is revoked already)."""
    t = tokens_for(env, "web")
    r = revoke(env, t["refresh_token"], "web", "refresh_token")
    assert r.status_code == 200, r.text
    with unchanged_sync(env):
        assert_token_error(refresh(env, "web", t["refresh_token"]), 400, "invalid_grant")
    # The grant's access token is refused too (README: revocation is checked on every request).
    with unchanged_sync(env):
        assert_bearer_challenge(env, mcp_post(env, t["access_token"]), "invalid_token")


@pytest.mark.parametrize("token,hint", [
    ("UNKNOWN", None), ("UNKNOWN", "refresh_token"), ("UNKNOWN", "no_such_hint"), ("FORGED_JWT", "access_token"),
    ("a.b.c", None), ("\x00", None),
], ids=["unknown", "unknown-with-hint", "unknown-hint-value", "jwt-of-another-key", "three-dots", "nul-byte"])
def test_revoking_an_unknown_token_is_200(env, token, hint):
    """RFC 7009 §2.2: an invalid token is not an error at the revocation endpoint (200), and an
    unknown hint is ignored (§2.1); nothing is revoked."""
    token = {"UNKNOWN": secrets.token_urlsafe(32), "FORGED_JWT": forged(env, "other-key")}.get(token, token)
    with unchanged_sync(env):
        r = revoke(env, token, "web", hint)
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers.get("cache-control", "")


@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
def test_another_client_cannot_revoke(env, kind):
    """RFC 7009 §2.1: the server checks the token was issued to the client asking; for another
    client the token is, to it, invalid: 200 (§2.2) and nothing revoked. The token survives."""
    t = tokens_for(env, "web")
    with unchanged_sync(env):
        r = revoke(env, t[kind], "other", kind)
    assert r.status_code == 200, r.text
    assert_mcp_accepts(env, t["access_token"])
    assert refresh(env, "web", t["refresh_token"]).status_code == 200


REVOKE_REFUSED = [
    # RFC 7009 §2.1 / RFC 6749 §2.3: client authentication; §2.2.1: RFC 6749 §5.2 errors.
    ("no-client-id", lambda t: (FORM, urlencode({"token": t})), 401, "invalid_client"),
    ("unknown-client", lambda t: (FORM, urlencode({"token": t, "client_id": "no-such-client"})), 401, "invalid_client"),
    ("public-client-with-secret", lambda t: (FORM, urlencode({"token": t, "client_id": "web", "client_secret": "x"})),
     401, "invalid_client"),
    ("basic-not-base64", lambda t: ({**FORM, "Authorization": "Basic !!!"}, urlencode({"token": t})), 401, "invalid_client"),
    ("no-token", lambda t: (FORM, urlencode({"client_id": "web"})), 400, "invalid_request"),
    ("empty-token", lambda t: (FORM, urlencode({"client_id": "web", "token": ""})), 400, "invalid_request"),
    ("repeated-token", lambda t: (FORM, urlencode({"client_id": "web", "token": t}) + "&token=x"), 400, "invalid_request"),
    ("json-body", lambda t: ({"Content-Type": "application/json"}, json.dumps({"token": t, "client_id": "web"})),
     400, "invalid_request"),
    ("no-content-type", lambda t: ({}, urlencode({"token": t, "client_id": "web"})), 400, "invalid_request"),
]


@pytest.mark.parametrize("request_of,status,error", [pytest.param(f, s, e, id=i) for i, f, s, e in REVOKE_REFUSED])
def test_revocation_request_refused(env, request_of, status, error):
    """Each malformed revocation revokes nothing: the refresh token still refreshes (the control)."""
    t = tokens_for(env, "web")
    headers, body = request_of(t["refresh_token"])
    with unchanged_sync(env):
        r = httpx2.post(f"{env.base}/oauth/revoke", headers=headers, content=body.encode(), timeout=30)
    assert_token_error(r, status, error)
    assert refresh(env, "web", t["refresh_token"]).status_code == 200


@pytest.mark.parametrize("secret", [None, "WRONG"], ids=["no-secret", "wrong-secret-basic"])
def test_confidential_client_must_authenticate_to_revoke(env, secret):
    """RFC 7009 §2.1: confidential clients authenticate at the revocation endpoint; without the
    secret nothing is revoked."""
    t = tokens_for(env, "conf")
    with unchanged_sync(env):
        if secret is None:
            r = revoke(env, t["refresh_token"], "conf", "refresh_token")
        else:
            r = httpx2.post(f"{env.base}/oauth/revoke", data={"token": t["refresh_token"]},
                            auth=("conf", wrong_secret()), timeout=30)
    assert_token_error(r, 401, "invalid_client")
    assert refresh(env, "conf", t["refresh_token"], secret=CONF_SECRET).status_code == 200


# --- /mcp: bearer checks ------------------------------------------------------------------------

def test_mcp_without_token(env):
    with unchanged_sync(env):
        assert_bearer_challenge(env, mcp_post(env), None)


def test_mcp_checks_the_token_before_reading_the_body(env):
    """Without a token, even a body that is not JSON gets the 401 challenge (RFC 6750 §3.1, no
    error code): nobody learns anything from /mcp before authenticating."""
    with unchanged_sync(env):
        r = httpx2.post(env.d.url, headers=modern_headers("tools/list"), content=b'{"jsonrpc": ', timeout=30)
    assert_bearer_challenge(env, r, None)


def jwk_of(key) -> dict:
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}


def forged(env: Env, kind: str) -> str:
    """A token that must be refused, made from a fresh real one."""
    if kind == "garbage":
        return "not-a-jwt-" + secrets.token_urlsafe(24)
    if kind == "overlong":
        return "a" * 20000
    real = tokens_for(env, "web")["access_token"]
    header, claims, signature = jwt_parts(real)
    h64, p64, _ = real.split(".")
    if kind == "other-key":
        return jwt_es256(header, claims, new_es256_key())
    if kind == "alg-none":
        return jwt_unsigned({**header, "alg": "none"}, claims)
    if kind == "alg-none-with-signature":
        return f"{b64u(json.dumps({**header, 'alg': 'none'}).encode())}.{p64}.{signature}"
    if kind == "hs256-with-public-key":
        # Key confusion: HMAC keyed with the published public key (as JWK JSON and as x ‖ y).
        jwk = next(k for k in get(f"{env.base}/oauth/jwks.json").json()["keys"] if k["kid"] == header["kid"])
        h = {**header, "alg": "HS256"}
        signing_input = f"{b64u(json.dumps(h).encode())}.{p64}".encode()
        return signing_input.decode() + "." + b64u(hmac.new(json.dumps(jwk).encode(), signing_input, "sha256").digest())
    if kind == "tampered-payload":
        return f"{h64}.{b64u(json.dumps({**claims, 'exp': claims['exp'] + 86400}).encode())}.{signature}"
    if kind == "tampered-subject":
        return f"{h64}.{b64u(json.dumps({**claims, 'sub': 'someone-else'}).encode())}.{signature}"
    if kind == "unknown-kid":
        return jwt_es256({**header, "kid": "no-such-kid"}, claims, new_es256_key())
    if kind == "truncated-signature":
        return f"{h64}.{p64}.{signature[:-8]}"
    if kind == "appended-garbage":
        return real + "x"
    if kind == "two-tokens":
        return f"{real} {real}"
    # Header injection (RFC 8725 §3.10): a key named by the token itself is never trusted.
    attacker = new_es256_key()
    if kind == "embedded-jwk":
        return jwt_es256({**header, "jwk": jwk_of(attacker)}, claims, attacker)
    if kind == "jku":
        return jwt_es256({**header, "jku": "http://127.0.0.1:1/jwks.json"}, claims, attacker)
    if kind == "kid-path-traversal":
        return jwt_es256({**header, "kid": "../../../../dev/null"}, claims, attacker)
    # Correctly signed with Doorman's own key, one claim wrong.
    kid, key = doorman_signing_key(env.d)
    assert kid == header["kid"]
    fresh = {**claims, "jti": secrets.token_urlsafe(16)}
    if kind == "wrong-aud":
        return jwt_es256(header, {**fresh, "aud": "https://other.example/mcp"}, key)
    if kind == "aud-is-the-issuer":
        return jwt_es256(header, {**fresh, "aud": env.base}, key)
    if kind == "wrong-iss":
        return jwt_es256(header, {**fresh, "iss": "https://evil.example"}, key)
    if kind == "typ-jwt":
        return jwt_es256({**header, "typ": "JWT"}, fresh, key)   # RFC 9068 §4: must be at+jwt
    if kind == "no-exp":
        return jwt_es256(header, {k: v for k, v in fresh.items() if k != "exp"}, key)
    if kind == "expired-claim":
        return jwt_es256(header, {**fresh, "iat": claims["iat"] - 7200, "exp": claims["iat"] - 3600}, key)
    if kind == "alg-label-es384":
        return jwt_es256({**header, "alg": "ES384"}, fresh, key)  # RFC 8725 §3.1: the expected alg only
    raise AssertionError(kind)


INVALID_TOKENS = ["garbage", "overlong", "other-key", "alg-none", "alg-none-with-signature", "hs256-with-public-key",
                  "tampered-payload", "tampered-subject", "unknown-kid", "truncated-signature", "appended-garbage",
                  "two-tokens", "embedded-jwk", "jku", "kid-path-traversal",
                  "wrong-aud", "aud-is-the-issuer", "wrong-iss", "typ-jwt", "no-exp", "expired-claim", "alg-label-es384"]


@pytest.mark.parametrize("kind", INVALID_TOKENS)
def test_mcp_refuses_invalid_token(env, kind):
    token = forged(env, kind)
    with unchanged_sync(env):
        assert_bearer_challenge(env, mcp_post(env, token), "invalid_token")


@pytest.mark.parametrize("value", ["Bearer", b"Bearer \xe9\xe9", "Bearer ,", "Bearer \"quoted\""],
                         ids=["no-token", "non-ascii", "comma", "quoted"])
def test_mcp_refuses_malformed_bearer_header(env, value):
    """RFC 6750 §2.1 `Bearer b64token`: anything else is a malformed access token, 401
    invalid_token (§3.1)."""
    h = [(k, v) for k, v in modern_headers("tools/list").items()] + [("Authorization", value)]
    with unchanged_sync(env):
        r = httpx2.post(env.d.url, headers=h, json=modern_request("tools/list"), timeout=30)
    assert_bearer_challenge(env, r, "invalid_token")


def test_mcp_accepts_the_scheme_in_any_case(env):
    """The control for the malformed headers: RFC 9110 §11.1, the scheme is case-insensitive."""
    t = tokens_for(env, "web")["access_token"]
    assert mcp_post(env, headers={"Authorization": f"bEaReR {t}"}).status_code == 200


def test_mcp_accepts_a_token_re_signed_with_doormans_key(env):
    """The control for the correctly-signed cases above: the helper makes tokens Doorman accepts
    when nothing is wrong, so each of those fails for its one wrong claim."""
    real = tokens_for(env, "web")["access_token"]
    header, claims, _ = jwt_parts(real)
    kid, key = doorman_signing_key(env.d)
    token = jwt_es256(header, {**claims, "jti": secrets.token_urlsafe(16)}, key)
    assert_mcp_accepts(env, token)


@pytest.mark.parametrize("scope", ["offline_access", "", "mcpx"])
def test_mcp_refuses_a_token_without_the_mcp_scope(env, scope):
    """RFC 6750 §3.1 insufficient_scope: 403 with the challenge naming the scope needed (MCP
    authorization, "Scope Challenge Handling")."""
    real = tokens_for(env, "web")["access_token"]
    header, claims, _ = jwt_parts(real)
    _, key = doorman_signing_key(env.d)
    token = jwt_es256(header, {**claims, "scope": scope, "jti": secrets.token_urlsafe(16)}, key)
    with unchanged_sync(env):
        r = mcp_post(env, token)
    assert r.status_code == 403, (r.status_code, r.text[:200])
    challenge = www_authenticate(r.headers.get("www-authenticate", ""))
    assert challenge[0].lower() == "bearer" and challenge[1].get("error") == "insufficient_scope", challenge
    assert challenge[1].get("scope") == "mcp", challenge


def test_mcp_refuses_expired_token(env):
    t = tokens_for(env, "web")
    assert_mcp_accepts(env, t["access_token"])
    advance_clock(env.d, 3700)  # access_token_lifetime is 1 h
    with unchanged_sync(env):
        assert_bearer_challenge(env, mcp_post(env, t["access_token"]), "invalid_token")
    # The sign-in itself lasts: the refresh token still works, and its access token is accepted.
    r = refresh(env, "web", t["refresh_token"])
    assert r.status_code == 200, r.text
    assert_mcp_accepts(env, r.json()["access_token"])


def test_mcp_refuses_revoked_token(env):
    t = tokens_for(env, "web")
    assert_mcp_accepts(env, t["access_token"])
    r = revoke(env, t["access_token"], "web", "access_token")
    assert r.status_code == 200, r.text
    STORED["jti"].add(jwt_parts(t["access_token"])[1]["jti"])
    with unchanged_sync(env):
        assert_bearer_challenge(env, mcp_post(env, t["access_token"]), "invalid_token")


@pytest.mark.parametrize("also_header", [False, True], ids=["query-only", "query-and-header"])
def test_mcp_refuses_token_in_query_string(env, also_header):
    """MCP authorization "Token Requirements": access tokens MUST NOT be in the query string;
    RFC 6750 §3.1 invalid_request is 400."""
    t = tokens_for(env, "web")
    with unchanged_sync(env):
        r = mcp_post(env, t["access_token"] if also_header else None, url=f"{env.d.url}?access_token={t['access_token']}")
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert oauth_error_of(r) == "invalid_request", (r.headers.get("www-authenticate"), r.text[:300])


def oauth_error_of(r: httpx2.Response) -> str | None:
    """The error code of a resource-server refusal: WWW-Authenticate `error`, else a JSON `error`."""
    for v in r.headers.get_list("www-authenticate"):
        err = www_authenticate(v)[1].get("error")
        if err:
            return err
    try:
        body = r.json()
    except ValueError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, str) else None


def test_mcp_refuses_two_authorization_headers(env):
    t = tokens_for(env, "web")
    h = modern_headers("tools/list")
    with unchanged_sync(env):
        r = httpx2.post(env.d.url, headers=[*h.items(), ("Authorization", f"Bearer {t['access_token']}"),
                                            ("Authorization", f"Bearer {t['access_token']}")],
                        json=modern_request("tools/list"), timeout=30)
    assert r.status_code == 400 and oauth_error_of(r) == "invalid_request", (r.status_code, r.text[:200])


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Digest"])
def test_mcp_refuses_other_schemes(env, scheme):
    """RFC 6750 §3.1: a request "attempted using an unsupported authentication method" lacks
    authentication information: 401 with the Bearer challenge and no error code."""
    t = tokens_for(env, "web")
    credential = {"Basic": base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode(),
                  "Token": t["access_token"], "Digest": 'username="alice", response="x"'}[scheme]
    with unchanged_sync(env):
        r = mcp_post(env, headers={"Authorization": f"{scheme} {credential}"})
    assert_bearer_challenge(env, r, None)


# --- /mcp with a good token: the request itself is hostile -----------------------------------------

def rpc_error(r: httpx2.Response) -> tuple:
    body = r.json()
    return body.get("id"), body["error"]["code"]


BODY = modern_request("tools/list")
CALL = modern_request("tools/call", {"name": "py_add", "arguments": {"a": 1, "b": 2}})
MCP_REFUSED = [
    # MCP basic/transports (2025-11-25) "Sending Messages": Content-Type JSON, Accept both.
    ("content-type-text", {"Content-Type": "text/plain"}, json.dumps(BODY), 415, None, -32000),
    ("no-content-type", {"Content-Type": None}, json.dumps(BODY), 415, None, -32000),
    ("accept-html", {"Accept": "text/html"}, BODY, 406, None, -32000),
    # JSON-RPC 2.0 §5.1: parse error -32700 (id null), invalid request -32600.
    ("invalid-json", {}, '{"jsonrpc": "2.0", "id": 1, "method": ', 400, None, -32700),
    ("nested-too-deep", {}, "[" * 5000 + "]" * 5000, 400, None, -32700),
    ("invalid-utf8", {}, b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', 400, None, -32700),
    ("json-null", {}, "null", 400, None, -32600),
    ("jsonrpc-1.0", {}, {**BODY, "jsonrpc": "1.0"}, 400, 1, -32600),
    ("no-jsonrpc", {}, {k: v for k, v in BODY.items() if k != "jsonrpc"}, 400, 1, -32600),
    ("id-float", {}, {**BODY, "id": 1.5}, 400, None, -32600),
    ("id-bool", {}, {**BODY, "id": True}, 400, None, -32600),
    ("id-object", {}, {**BODY, "id": {"a": 1}}, 400, None, -32600),
    ("method-number", {}, {**BODY, "method": 42}, 400, 1, -32600),
    ("empty-batch", {}, [], 400, None, -32600),
    ("batch-of-junk", {}, [1, "x", None], 400, None, -32600),
    ("batch-of-requests", {}, [BODY, BODY], 400, None, -32600),
    # MCP 2026-07-28 "Server Validation": headers agree with the body, -32020; versions -32022.
    ("no-mcp-method", {"mcp-method": None}, BODY, 400, 1, -32020),
    ("mcp-method-other", {"mcp-method": "tools/call"}, BODY, 400, 1, -32020),
    ("mcp-method-case", {"mcp-method": "TOOLS/LIST"}, BODY, 400, 1, -32020),
    ("no-protocol-version-header", {"mcp-protocol-version": None}, BODY, 400, 1, -32020),
    ("protocol-version-garbage", {"mcp-protocol-version": "garbage"}, BODY, 400, 1, -32020),
    ("mcp-name-other-tool", {"mcp-method": "tools/call", "mcp-name": "py_echo"}, CALL, 400, 1, -32020),
    ("mcp-name-missing", {"mcp-method": "tools/call"}, CALL, 400, 1, -32020),
    ("mcp-name-bad-base64", {"mcp-method": "tools/call", "mcp-name": "=?base64?!!!?="}, CALL, 400, 1, -32020),
    ("unsupported-version", {"mcp-protocol-version": "2099-01-01"}, modern_request("tools/list", version="2099-01-01"),
     400, 1, -32022),
    ("version-garbage-both", {"mcp-protocol-version": "v1"}, modern_request("tools/list", version="v1"), 400, 1, -32022),
    ("meta-missing", {}, {**BODY, "params": {}}, 400, 1, -32602),
    ("removed-method-ping", {"mcp-method": "ping"}, modern_request("ping"), 404, 1, -32601),
    ("unknown-method", {"mcp-method": "tools/frobnicate"}, modern_request("tools/frobnicate"), 404, 1, -32601),
    # MCP basic/transports "Session Management": an unknown session is 404.
    ("forged-session-id", {"mcp-session-id": "f" * 64, "mcp-protocol-version": "2025-11-25", "mcp-method": None},
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 404, None, -32001),
    ("no-session-legacy", {"mcp-protocol-version": "2025-11-25", "mcp-method": None},
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 400, 1, -32000),
    ("oversize-body", {}, {**BODY, "params": {**BODY["params"], "pad": "x" * (5 * 1024 * 1024)}}, 413, None, -32600),
]


@pytest.mark.parametrize("headers,body,status,rid,code", [pytest.param(*c[1:], id=c[0]) for c in MCP_REFUSED])
def test_mcp_refuses_hostile_request_with_a_good_token(env, headers, body, status, rid, code):
    """With a valid token, so the request is the only fault: the exact HTTP status and JSON-RPC
    error code, and nothing stored. The control: assert_mcp_accepts (the same tools/list)."""
    t = good_token(env)
    h = {**modern_headers("tools/list"), "Authorization": f"Bearer {t}"}
    for k, v in headers.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    content = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    with unchanged(env):
        r = httpx2.post(env.d.url, headers=h, content=content, timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert rpc_error(r) == (rid, code), r.text[:300]


_GOOD: dict[str, str] = {}


def good_token(e: Env) -> str:
    """One access token for the hostile-request matrix (it only needs to be valid)."""
    token = _GOOD.get("token")
    if token is None or mcp_post(e, token).status_code != 200:
        token = _GOOD["token"] = tokens_for(e, "web", "bob")["access_token"]
    return token


# --- Stateful sessions belong to the person who opened them --------------------------------------

@pytest.fixture
def alice_session(env):
    alice = tokens_for(env, "web", "alice")["access_token"]
    bob = tokens_for(env, "web", "bob")["access_token"]
    with httpx2.Client(timeout=30, headers={"Authorization": f"Bearer {alice}"}) as http:
        sid = initialize(http, env.d.url)
    return sid, alice, bob


def list_tools_in(e: Env, sid: str, token: str | None, version: str = "2025-11-25") -> httpx2.Response:
    h = session_headers(sid, version)
    if token:
        h["Authorization"] = f"Bearer {token}"
    return httpx2.post(e.d.url, headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, timeout=30)


def test_session_with_its_owner(env, alice_session):
    sid, alice, _ = alice_session
    assert list_tools_in(env, sid, alice).status_code == 200


def test_session_of_another_person_is_404(env, alice_session):
    """README "On /mcp": another person's MCP-Session-Id is a session that does not exist."""
    sid, _, bob = alice_session
    assert_mcp_accepts(env, bob)          # bob's token is good, only the session is not his
    with unchanged(env):
        r = list_tools_in(env, sid, bob)
    assert r.status_code == 404 and rpc_error(r) == (None, -32001), (r.status_code, r.text[:200])


def test_session_stream_of_another_person_is_404(env, alice_session):
    sid, _, bob = alice_session
    with unchanged(env):
        r = httpx2.get(env.d.url, headers={**session_headers(sid), "Accept": "text/event-stream",
                                           "Authorization": f"Bearer {bob}"}, timeout=30)
    assert r.status_code == 404 and rpc_error(r) == (None, -32001), (r.status_code, r.text[:200])


def test_session_without_token_is_401(env, alice_session):
    sid, _, _ = alice_session
    with unchanged(env):
        assert_bearer_challenge(env, list_tools_in(env, sid, None), None)


@pytest.mark.parametrize("case,status,rid,code", [
    ("other-version", 400, 2, -32000),      # MCP basic/transports "Protocol Version Header"
    ("unknown-version", 400, 2, -32022),
    ("initialize-again", 400, 5, -32600),   # basic/lifecycle: initialize once per session
    ("batch", 400, None, -32600),           # batches were removed after 2025-03-26
])
def test_session_refuses_hostile_request_of_its_owner(env, alice_session, case, status, rid, code):
    sid, alice, _ = alice_session
    h = {**session_headers(sid), "Authorization": f"Bearer {alice}"}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    if case == "other-version":
        h["mcp-protocol-version"] = "2025-06-18"
    elif case == "unknown-version":
        h["mcp-protocol-version"] = "1999-01-01"
    elif case == "initialize-again":
        body = {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    else:
        body = [body, body]
    with unchanged(env):
        r = httpx2.post(env.d.url, headers=h, json=body, timeout=30)
    assert r.status_code == status and rpc_error(r) == (rid, code), (r.status_code, r.text[:200])
    assert list_tools_in(env, sid, alice).status_code == 200      # the session is untouched


def test_another_person_cannot_end_a_session(env, alice_session):
    sid, alice, bob = alice_session
    with unchanged(env):
        r = httpx2.delete(env.d.url, headers={**session_headers(sid), "Authorization": f"Bearer {bob}"}, timeout=30)
    assert r.status_code == 404 and rpc_error(r) == (None, -32001), (r.status_code, r.text[:200])
    assert list_tools_in(env, sid, alice).status_code == 200


# --- CSRF on the sign-in and consent forms -------------------------------------------------------

def open_sign_in(e: Env, b: Browser, client_id: str = "web") -> tuple[str, httpx2.Response]:
    """Starts a flow in browser `b` and follows it to the sign-in page."""
    _, challenge = pkce()
    url = authorize_url(e, client_id, redirect_uri_of(client_id), challenge, secrets.token_urlsafe(8))
    for _ in range(5):
        r = b.get(url)
        if r.status_code in (302, 303):
            url = urljoin(url, r.headers["location"])
            assert url.startswith(e.base + "/"), url
            continue
        break
    assert urlparse(url).path == "/sign-in" and r.status_code == 200, (url, r.status_code)
    return url, r


def sign_in_form(r: httpx2.Response):
    return next(f for f in forms_of(r.text) if "password" in f.fields)


def credentials(user: str = "alice") -> dict:
    return {"username": user, "password": PASSWORDS[user]}


def assert_refused_sign_in(b: Browser, r: httpx2.Response, reason: str) -> None:
    """400 page naming `reason`, and no sign-in cookie."""
    assert_error_page(r, reason)
    assert not any(n.endswith("doorman_session") for n in set_cookies(r)), r.headers.get_list("set-cookie")
    assert not any(c.name.endswith("doorman_session") for c in b.http.cookies.jar)


def assert_sign_in_proceeds(e: Env, r: httpx2.Response) -> None:
    assert r.status_code in (302, 303), f"{r.status_code} {r.text[:300]}"
    loc = urljoin(e.base + "/", r.headers["location"])
    assert loc.startswith(e.base + "/consent") or loc.startswith(PUBLIC["web"]), loc


def test_sign_in_without_csrf(env):
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b)
        form = sign_in_form(r)
        assert "csrf" in form.fields and "request" in form.fields
        data = {k: v for k, v in {**form.fields, **credentials()}.items() if k != "csrf"}
        with unchanged(env):
            refused = b.http.post(urljoin(url, form.action or url), data=data)
        assert_refused_sign_in(b, refused, "Form expired")
        assert_sign_in_proceeds(env, b.submit(url, form, credentials()))   # control
        harvest(b)
    finally:
        b.close()


def test_sign_in_with_csrf_not_matching_the_cookie(env):
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b)
        form = sign_in_form(r)
        with unchanged(env):
            refused = b.submit(url, form, {**credentials(), "csrf": secrets.token_urlsafe(32)})
        assert_refused_sign_in(b, refused, "Form expired")
        assert_sign_in_proceeds(env, b.submit(url, form, credentials()))   # control
        harvest(b)
    finally:
        b.close()


def test_sign_in_without_the_csrf_cookie(env):
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b)
        form = sign_in_form(r)
        b.http.cookies.clear()
        with unchanged(env):
            refused = b.submit(url, form, credentials())
        assert_refused_sign_in(b, refused, "Form expired")
    finally:
        b.close()


def test_sign_in_on_a_request_bound_to_another_browser(env):
    """Login CSRF: the attacker posts the victim's request id with the attacker's own (valid)
    cookie and csrf pair. The request row is bound to the victim's browser."""
    victim, attacker = Browser(env.d), Browser(env.d)
    try:
        victim_url, victim_page = open_sign_in(env, victim)
        attacker_url, attacker_page = open_sign_in(env, attacker)
        victim_form, attacker_form = sign_in_form(victim_page), sign_in_form(attacker_page)
        assert victim_form.fields["request"] != attacker_form.fields["request"]
        data = {**attacker_form.fields, **credentials(), "request": victim_form.fields["request"]}
        target = urljoin(victim_url, victim_form.action or victim_url)
        with unchanged(env):
            refused = attacker.http.post(target, data=data)
        assert_refused_sign_in(attacker, refused, "Wrong browser")
    finally:
        victim.close()
        attacker.close()


def reach_consent(e: Env, b: Browser, client_id: str, user: str = "alice") -> tuple[str, httpx2.Response]:
    """Follows a fresh flow for `client_id` to its consent page, signing in on the way."""
    _, challenge = pkce()
    url = authorize_url(e, client_id, redirect_uri_of(client_id), challenge, secrets.token_urlsafe(8))
    r = b.get(url)
    for _ in range(6):
        if r.status_code in (302, 303):
            url = urljoin(url, r.headers["location"])
            assert url.startswith(e.base + "/"), f"left Doorman without a consent page: {url}"
            r = b.get(url)
            continue
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        path = urlparse(url).path
        if path == "/consent":
            harvest(b)
            return url, r
        assert path == "/sign-in", url
        r = b.submit(url, sign_in_form(r), credentials(user))
    raise AssertionError("no consent page")


def consent_form(r: httpx2.Response):
    return next(f for f in forms_of(r.text) if "request" in f.fields and "csrf" in f.fields)


def assert_consent_refused(e: Env, r: httpx2.Response, reason: str) -> None:
    assert_error_page(r, reason)


@pytest.mark.parametrize("swap", ["client_id", "request"])
def test_consent_posted_for_another_client(env, swap):
    """The consent form of flow A (client consent-a), posted with flow B's client (or B's request
    id): 400, no code for anyone, and no consent remembered for either client."""
    b = Browser(env.d)
    try:
        a_url, a_page = reach_consent(env, b, "consent-a")
        b_url, b_page = reach_consent(env, b, "consent-b")
        a_form, b_form = consent_form(a_page), consent_form(b_page)
        assert a_form.fields["client_id"] == "consent-a" and b_form.fields["client_id"] == "consent-b"
        swapped = {"client_id": "consent-b"} if swap == "client_id" else {"request": b_form.fields["request"]}
        with unchanged(env):
            r = b.submit(a_url, a_form, {"decision": "allow", **swapped})
        assert_consent_refused(env, r, "Consent does not match")
        # Nothing was approved: both clients still ask.
        again = b.get(b_url)
        assert again.status_code == 200 and consent_form(again).fields["client_id"] == "consent-b"
        reach_consent(env, b, "consent-a")
    finally:
        b.close()


def test_consent_without_signing_in(env):
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b)
        request_id = sign_in_form(r).fields["request"]
        csrf = next(c.value for c in b.http.cookies.jar if c.name.endswith("doorman_csrf"))
        consent_url = f"{env.base}/consent?request={request_id}"
        with unchanged(env):
            page = b.get(consent_url)
            post = b.http.post(consent_url, data={"request": request_id, "csrf": csrf, "client_id": "web",
                                                  "decision": "allow"})
        # Not signed in: back to the sign-in page of the same request, nothing approved.
        for r in (page, post):
            assert r.status_code == 303, (r.status_code, r.headers.get("location"))
            assert r.headers["location"] == f"/sign-in?request={request_id}", r.headers["location"]
    finally:
        b.close()


def test_consent_is_remembered_per_person(env):
    """Security best practices, "Per-Client Consent Storage": alice's approval of a client does
    not approve it for bob."""
    a = Browser(env.d)
    b = Browser(env.d)
    try:
        url, page = reach_consent(env, a, "consent-person", "alice")
        allowed = a.submit(url, consent_form(page), {"decision": "allow"})
        assert allowed.status_code in (302, 303)
        SEEN["code"].update(query_of(allowed.headers["location"]).get("code", []))
        _, page = reach_consent(env, b, "consent-person", "bob")     # raises if bob is not asked
        assert consent_form(page).fields["client_id"] == "consent-person"
        harvest(a)
        harvest(b)
    finally:
        a.close()
        b.close()


def test_consent_form_cannot_be_replayed(env):
    """An authorization request gives at most one code: posting its consent form again is refused."""
    b = Browser(env.d)
    try:
        url, page = reach_consent(env, b, "consent-replay")
        form = consent_form(page)
        first = b.submit(url, form, {"decision": "allow"})
        assert first.status_code in (302, 303) and first.headers["location"].startswith(PUBLIC["consent-replay"])
        SEEN["code"].update(query_of(first.headers["location"]).get("code", []))
        with unchanged(env):
            again = b.submit(url, form, {"decision": "allow"})
        assert_error_page(again, "expired")
    finally:
        b.close()


def test_authorization_request_expires(env):
    """The flow's row lasts 10 minutes (README): a sign-in posted later is refused."""
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b)
        form = sign_in_form(r)
        advance_clock(env.d, 11 * 60)
        with unchanged(env):
            refused = b.submit(url, form, credentials())
        assert_refused_sign_in(b, refused, "expired")
    finally:
        b.close()


def failed_sign_in(e: Env, b: Browser, username: str, password: str, status: int) -> str:
    """Posts a sign-in that must fail with `status` (README "Pages and their answers": 401 for
    wrong credentials, 429 for a locked name); returns the page's text without the name."""
    url, r = open_sign_in(e, b)
    if password != PASSWORDS.get(username):
        SEEN["password"].add(password)    # a mistyped password is as secret as the right one
    with unchanged(e, COUNTS_FAILURE):
        r = b.submit(url, sign_in_form(r), {"username": username, "password": password})
    assert r.status_code == status, (r.status_code, r.headers.get("location"), page_text(r)[:300])
    assert r.headers.get("content-type", "").startswith("text/html") and "location" not in r.headers
    assert ("is incorrect" if status == 401 else "Too many") in page_text(r), page_text(r)[:300]
    assert not any(c.name.endswith("doorman_session") for c in b.http.cookies.jar)
    assert not any(n.endswith("doorman_session") for n in set_cookies(r))
    return page_text(r).replace(username, "NAME")


def typo(user: str) -> str:
    return f"{user}-typo-" + secrets.token_urlsafe(12)


def test_wrong_password_and_lockout(env):
    """max_failed_sign_ins (5) wrong passwords lock the name for `lockout` (15 min): the 5th
    failure already answers 429, then even the right password is refused (429); after the lockout
    it works again. (4 failures then the right password signs in: see test_sign_in_*_proceeds.)"""
    add_user(env.d, "carol", PASSWORDS["carol"])
    b = Browser(env.d)
    try:
        for _ in range(4):
            failed_sign_in(env, b, "carol", typo("carol"), 401)
        failed_sign_in(env, b, "carol", typo("carol"), 429)
        failed_sign_in(env, b, "carol", PASSWORDS["carol"], 429)
        advance_clock(env.d, 16 * 60)
        url, r = open_sign_in(env, b)
        assert_sign_in_proceeds(env, b.submit(url, sign_in_form(r), credentials("carol")))
        harvest(b)
    finally:
        b.close()


def test_sign_in_after_four_failures_proceeds(env):
    """The control for the lockout: below max_failed_sign_ins the right password still works."""
    add_user(env.d, "frank", PASSWORDS["frank"])
    b = Browser(env.d)
    try:
        for _ in range(4):
            failed_sign_in(env, b, "frank", typo("frank"), 401)
        url, r = open_sign_in(env, b)
        assert_sign_in_proceeds(env, b.submit(url, sign_in_form(r), credentials("frank")))
        harvest(b)
    finally:
        b.close()


def test_sign_in_answers_do_not_reveal_which_names_exist(env):
    """README: one message for unknown names and wrong passwords (401), and a locked name looks the
    same whether or not it exists (429)."""
    add_user(env.d, "erin", PASSWORDS["erin"])
    ghost = "ghost-" + secrets.token_hex(4)
    b = Browser(env.d)
    try:
        unknown = failed_sign_in(env, b, ghost, typo(ghost), 401)
        wrong = failed_sign_in(env, b, "erin", typo("erin"), 401)
        assert unknown == wrong
        for _ in range(3):
            failed_sign_in(env, b, ghost, typo(ghost), 401)
            failed_sign_in(env, b, "erin", typo("erin"), 401)
        assert failed_sign_in(env, b, ghost, typo(ghost), 429) == failed_sign_in(env, b, "erin", typo("erin"), 429)
        assert failed_sign_in(env, b, ghost, typo(ghost), 429) == failed_sign_in(env, b, "erin", PASSWORDS["erin"], 429)
    finally:
        b.close()


@pytest.mark.parametrize("case,error", [("not-signed-in", "login_required"), ("no-consent", "consent_required")])
def test_prompt_none_answers_instead_of_showing_a_page(env, case, error):
    """README: `prompt=none` answers login_required / consent_required (OIDC Core §3.1.2.6),
    redirected with state and iss."""
    b = Browser(env.d) if case == "not-signed-in" else env.browser("alice")
    try:
        if case == "no-consent":
            code_for(env, "web")          # alice's browser is signed in; "consent-a" is never approved
        client = "web" if case == "not-signed-in" else "consent-a"
        _, challenge = pkce()
        state = secrets.token_urlsafe(8)
        with unchanged(env):
            r = b.get(authorize_url(env, client, PUBLIC[client], challenge, state, prompt="none"))
        assert_error_redirect(env, r, PUBLIC[client], error, state)

    finally:
        if case == "not-signed-in":
            b.close()


def test_prompt_login_asks_a_signed_in_person_again(env):
    code_for(env, "web")                  # signed in, consent remembered: normally straight back
    _, challenge = pkce()
    b = env.browser("alice")
    r = b.get(authorize_url(env, "web", PUBLIC["web"], challenge, "s", prompt="login"))
    assert r.status_code in (302, 303)
    assert urlparse(urljoin(env.base, r.headers["location"])).path == "/sign-in", r.headers["location"]


def test_consent_page_escapes_the_client_name_and_shows_the_redirect_host(env):
    """MCP authorization "Localhost Redirect URI Risks"/consent UI: the redirect URI's host is
    shown; a client-chosen name is text, never markup."""
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    r = register_from_fresh_address(env, {"client_name": name, "redirect_uris": ["https://xss-host.example/cb"],
                                          "token_endpoint_auth_method": "none"})
    assert r.status_code == 201, r.text
    cid = r.json()["client_id"]
    b = Browser(env.d)
    try:
        _, challenge = pkce()
        url = authorize_url(env, cid, "https://xss-host.example/cb", challenge, "x")
        page = b.get(url)
        while page.status_code in (302, 303):
            url = urljoin(url, page.headers["location"])
            page = b.get(url)
            if urlparse(url).path == "/sign-in":
                page = b.submit(url, sign_in_form(page), credentials())
        assert urlparse(url).path == "/consent" and page.status_code == 200, url
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert name in page_text(page)
        assert "xss-host.example" in page_text(page)
    finally:
        b.close()


@pytest.mark.parametrize("username", ["n" * 10000, "ghost\x00", "' OR '1'='1' --", "", "gh\u202eost", "%00ghost"],
                         ids=["overlong", "nul-byte", "sql-ish", "empty", "rtl-override", "percent-literal"])
def test_sign_in_with_a_hostile_username(env, username):
    """Whatever the name, a wrong password is the one 401 message (README "Pages and their
    answers"), the attempt is counted and audited, and nobody is signed in. The control:
    test_sign_in_after_four_failures_proceeds (the right name and password)."""
    b = Browser(env.d)
    try:
        failed_sign_in(env, b, username, typo("x"), 401)
    finally:
        b.close()


PAGE_REFUSED = [
    # (id, method, path, form fields, status, reason on the page)
    ("sign-in-without-request", "GET", "/sign-in", None, 400, "Nothing to sign in to"),
    ("sign-in-forged-request", "GET", "/sign-in?request=FORGED", None, 400, "This sign-in has expired"),
    ("sign-in-overlong-request", "GET", "/sign-in?request=" + "r" * 5000, None, 400, "This sign-in has expired"),
    ("consent-without-request", "GET", "/consent", None, 400, "Nothing to sign in to"),
    ("consent-forged-request", "GET", "/consent?request=FORGED", None, 400, "This sign-in has expired"),
    ("post-sign-in-forged-request", "POST", "/sign-in", {"request": "FORGED", "username": "alice", "password": "PASSWORD"},
     400, "This sign-in has expired"),
    ("post-sign-in-without-request", "POST", "/sign-in", {"username": "alice", "password": "PASSWORD"},
     400, "Nothing to sign in to"),
    ("post-consent-forged-request", "POST", "/consent", {"request": "FORGED", "client_id": "web", "decision": "allow"},
     400, "This sign-in has expired"),
    ("setup-forged-link", "GET", "/setup?token=FORGED", None, 404, "This setup link is not valid"),
    ("post-setup-forged-link", "POST", "/setup", {"token": "FORGED", "username": "mallory", "password": "mallory-password-1"},
     404, "This setup link is not valid"),
    ("post-setup-without-csrf", "POST", "/setup", {"token": "FORGED", "username": "mallory", "password": "mallory-password-1",
                                                   "csrf": None}, 400, "Form expired"),
]


@pytest.mark.parametrize("method,path,fields,status,reason", [pytest.param(*c[1:], id=c[0]) for c in PAGE_REFUSED])
def test_page_with_a_forged_or_missing_request(env, method, path, fields, status, reason):
    """Doorman's pages with a request id, a setup link or a form they did not issue: the page
    says why, nothing is signed in or created. POSTs carry a valid CSRF pair, so the forged part is
    the only fault (except the case without it)."""
    b = Browser(env.d)
    try:
        _, page = open_sign_in(env, b)              # a valid CSRF cookie and form value
        csrf = sign_in_form(page).fields["csrf"]
        url = env.base + path.replace("FORGED", secrets.token_urlsafe(24))
        with unchanged(env):
            if method == "GET":
                r = b.get(url)
            else:
                data = {"csrf": csrf, **{k: (PASSWORDS["alice"] if v == "PASSWORD" else
                                           secrets.token_urlsafe(24) if v == "FORGED" else v)
                                        for k, v in fields.items()}}
                r = b.http.post(url, data={k: v for k, v in data.items() if v is not None})
        assert_error_page(r, reason, status=status)
        assert not any(n.endswith("doorman_session") for n in set_cookies(r))
    finally:
        b.close()


@pytest.mark.parametrize("decision", ["maybe", "", "ALLOW"])
def test_consent_with_an_invalid_decision(env, decision):
    """The consent answer is allow or deny: anything else is a 400 page, and the request stays
    answerable (the control: it is then answered, with deny: the "deny" client is never approved)."""
    b = Browser(env.d)
    try:
        url, page = reach_consent(env, b, "deny")
        form = consent_form(page)
        with unchanged(env):
            r = b.submit(url, form, {"decision": decision})
        assert_error_page(r, "Invalid answer")
        denied = b.submit(url, form, {"decision": "deny"})
        assert denied.status_code == 303 and "error=access_denied" in denied.headers["location"], denied.headers
        harvest(b)
    finally:
        b.close()


# --- Pages: framing and cookies ------------------------------------------------------------------

def assert_no_framing(r: httpx2.Response) -> None:
    csp = r.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", csp


def test_pages_cannot_be_framed(env):
    b = Browser(env.d)
    try:
        _, sign_in_page = open_sign_in(env, b, "pages")
        assert_no_framing(sign_in_page)
        _, consent_page = reach_consent(env, b, "pages")
        assert_no_framing(consent_page)
        _, challenge = pkce()
        error_page = get(authorize_url(env, "no-such-client", "https://pages.example/cb", challenge))
        assert error_page.status_code == 400
        assert_no_framing(error_page)
    finally:
        b.close()


def test_cookies_are_httponly_and_samesite_lax(env):
    b = Browser(env.d)
    try:
        url, r = open_sign_in(env, b, "pages")
        signed_in = b.submit(url, sign_in_form(r), credentials())
        assert signed_in.status_code in (302, 303)
        harvest(b)
        cookies = {}
        for page in b.pages:
            cookies.update(set_cookies(page))
        names = {n for n in cookies if n.endswith("doorman_csrf") or n.endswith("doorman_session")}
        assert any(n.endswith("doorman_csrf") for n in names) and any(n.endswith("doorman_session") for n in names), cookies.keys()
        for n in names:
            c = cookies[n]
            assert "httponly" in c, (n, c)
            assert c.get("samesite", "").lower() == "lax", (n, c)
            assert c.get("path") == "/", (n, c)
    finally:
        b.close()


# --- Dynamic client registration (RFC 7591) -------------------------------------------------------

_SOURCES = itertools.count(20)


def register_from_fresh_address(e: Env, body, *, raw: bytes | None = None,
                                content_type: str | None = "application/json") -> httpx2.Response:
    """POST /oauth/register from a loopback address no other test uses (127.0.0.N), so each test
    has its own registrations_per_hour budget."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{next(_SOURCES)}")
    with httpx2.Client(transport=transport, timeout=60) as c:
        if raw is not None:
            r = c.post(f"{e.base}/oauth/register", content=raw,
                       headers={"Content-Type": content_type} if content_type else {})
        else:
            r = c.post(f"{e.base}/oauth/register", json=body)
    record_registration(r)
    return r


def assert_registration_refused(e: Env, body, error: str, *, raw: bytes | None = None,
                                content_type: str | None = "application/json", status: int = 400) -> None:
    """RFC 7591 §3.2.2: 400 with the JSON error, no-store, no client made. Only a JSON object
    reaches the registration budget (TAKES_QUOTA); bodies refused before it change nothing."""
    takes_quota = raw is None and isinstance(body, dict)
    with unchanged_sync(e, TAKES_QUOTA if takes_quota else {}):
        r = register_from_fresh_address(e, body, raw=raw, content_type=content_type)
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), (r.headers, r.text[:200])
    assert r.json()["error"] == error, r.text[:300]
    assert "no-store" in r.headers.get("cache-control", ""), r.headers


GOOD_REGISTRATION = {"client_name": "x", "redirect_uris": ["https://a.example/cb"]}


@pytest.mark.parametrize("uri", [
    "not a uri",
    "https://app.example/cb#fragment",
    "https://app.example/cb#",
    "http://app.example/cb",
    "http://localhost.evil.example/cb",
    "http://127.0.0.1.nip.io/cb",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "vbscript:msgbox(1)",
    "/relative/cb",
    "",
    "https://*.example/cb",
], ids=["not-a-uri", "fragment", "empty-fragment", "http-not-loopback", "localhost-prefix-host", "loopback-prefix-host",
        "javascript", "javascript-case", "data", "file", "vbscript", "relative", "empty", "wildcard-host"])
def test_registration_invalid_redirect_uri(env, uri):
    """RFC 7591 §2 / §3.2.2, RFC 8252 §7-8, OAuth 2.1 §2.3.1, RFC 9700 §2.1 (complete redirect URIs,
    no patterns). The control: test_registration_response_public."""
    assert_registration_refused(env, {"client_name": "bad", "redirect_uris": [uri]}, "invalid_redirect_uri")


@pytest.mark.parametrize("body,error", [
    ({"client_name": "x", "redirect_uris": []}, "invalid_redirect_uri"),
    ({"client_name": "x"}, "invalid_redirect_uri"),
    ({"client_name": "x", "redirect_uris": None}, "invalid_redirect_uri"),
    ({"client_name": "x", "redirect_uris": "https://a.example/cb"}, "invalid_redirect_uri"),
    ({"client_name": "x", "redirect_uris": [42]}, "invalid_redirect_uri"),
    ({"client_name": "x", "redirect_uris": ["https://a.example/cb", "javascript:alert(1)"]}, "invalid_redirect_uri"),
    ({**GOOD_REGISTRATION, "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "grant_types": ["implicit"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "grant_types": ["password"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "grant_types": "authorization_code"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "grant_types": [1]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "response_types": ["token"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "response_types": ["code", "token"]}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "response_types": "code"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "token_endpoint_auth_method": "client_secret_jwt"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "token_endpoint_auth_method": "tls_client_auth"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "token_endpoint_auth_method": "NONE"}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "token_endpoint_auth_method": 42}, "invalid_client_metadata"),
    ({**GOOD_REGISTRATION, "client_name": 42}, "invalid_client_metadata"),
    (["https://a.example/cb"], "invalid_client_metadata"),
    ("client", "invalid_client_metadata"),
    (None, "invalid_client_metadata"),
    (42, "invalid_client_metadata"),
], ids=["empty-redirect-list", "no-redirect-uris", "redirect-uris-null", "redirect-uris-string", "redirect-uri-number",
        "one-bad-redirect-uri", "client-credentials", "implicit", "password", "device-code", "grant-types-string",
        "grant-type-number", "response-type-token", "response-types-mixed", "response-types-string",
        "client-secret-jwt", "private-key-jwt", "tls-client-auth", "auth-method-case", "auth-method-number",
        "client-name-number", "json-array", "json-string", "json-null", "json-number"])
def test_registration_invalid_metadata(env, body, error):
    """RFC 7591 §3.2.2: invalid_redirect_uri for redirect URIs, invalid_client_metadata for any
    other field (a value of the wrong type included: §2 defines each field's type)."""
    assert_registration_refused(env, body, error)


@pytest.mark.parametrize("raw,content_type", [
    (b"client_name=x&redirect_uris=https://a.example/cb", "application/json"),
    (b"client_name=x&redirect_uris=https://a.example/cb", "application/x-www-form-urlencoded"),
    (json.dumps(GOOD_REGISTRATION).encode(), "text/plain"),
    (json.dumps(GOOD_REGISTRATION).encode(), None),
    (b'{"client_name": "x", "redirect_uris": [', "application/json"),
    (b"", "application/json"),
    (b'{"client_name": "\xff", "redirect_uris": ["https://a.example/cb"]}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (json.dumps({**GOOD_REGISTRATION, "x_padding": "p" * 17000}).encode(), "application/json"),
    (json.dumps({"client_name": "x", "redirect_uris": [f"https://a{i}.example/cb" for i in range(1000)]}).encode(),
     "application/json"),
    (json.dumps({**GOOD_REGISTRATION, "x_padding": "p" * (3 * 1024 * 1024)}).encode(), "application/json"),
], ids=["form-as-json", "form", "json-as-text-plain", "no-content-type", "truncated-json", "empty", "invalid-utf8",
        "nested-too-deep", "over-16KiB", "huge-redirect-list", "3MiB"])
def test_registration_body_that_is_not_client_metadata(env, raw, content_type):
    """RFC 7591 §3.1: a JSON object in an application/json body; §3.2.2 invalid_client_metadata
    otherwise (larger than the 16 KiB Doorman accepts included, whatever the size)."""
    assert_registration_refused(env, None, "invalid_client_metadata", raw=raw, content_type=content_type)


def test_registration_response_public(env):
    reg = env.register("dyn-public", token_endpoint_auth_method="none")
    for field in ("client_id", "client_id_issued_at", "redirect_uris", "token_endpoint_auth_method",
                  "registration_client_uri"):
        assert field in reg, (field, reg)
    assert reg["redirect_uris"] == ["https://dyn-public.example/cb"]
    assert reg["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in reg
    assert reg["registration_client_uri"].startswith(env.base + "/")
    # And the client works end to end (the control for the refusals).
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    loc = env.browser("alice").authorize(
        authorize_url(env, reg["client_id"], "https://dyn-public.example/cb", challenge, state), "alice", PASSWORDS["alice"])
    q = query_of(loc)
    assert q.get("iss") == [env.base] and q.get("state") == [state], loc
    SEEN["code"].add(q["code"][0])
    r = exchange(env, Code(q["code"][0], verifier, "https://dyn-public.example/cb", reg["client_id"]))
    assert r.status_code == 200, r.text


def test_registration_response_confidential(env):
    reg = env.register("dyn-conf", token_endpoint_auth_method="client_secret_basic")
    assert reg["token_endpoint_auth_method"] == "client_secret_basic"
    assert reg.get("client_secret"), reg
    assert "client_secret_expires_at" in reg    # RFC 7591 §3.2.1: REQUIRED with a secret
    # The secret works, a wrong one does not.
    c = code_for(env, reg["client_id"], redirect_uri="https://dyn-conf.example/cb")
    assert_token_error(exchange(env, c, secret=wrong_secret()), 401, "invalid_client")
    c = code_for(env, reg["client_id"], redirect_uri="https://dyn-conf.example/cb")
    assert exchange(env, c, secret=reg["client_secret"]).status_code == 200


def test_registration_rate_limit(env):
    """registrations_per_hour = 3 in this Doorman: the 4th from one address is 429; another
    address is not affected."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{next(_SOURCES)}")
    statuses = []
    with httpx2.Client(transport=transport, timeout=30) as c:
        for i in range(4):
            with unchanged_sync(env, TAKES_QUOTA) if i == 3 else contextlib.nullcontext():
                r = c.post(f"{env.base}/oauth/register",
                           json={"client_name": f"burst-{i}", "redirect_uris": [f"https://burst{i}.example/cb"]})
            statuses.append(r.status_code)
            record_registration(r)
    assert statuses == [201, 201, 201, 429], statuses
    assert r.json()["error"] == "invalid_request" and r.headers.get("retry-after"), (r.headers, r.text)
    other = register_from_fresh_address(env, {"client_name": "calm", "redirect_uris": ["https://calm.example/cb"]})
    assert other.status_code == 201, other.text


def test_registration_management_needs_the_clients_own_token(env):
    """RFC 7592 §2: the registration access token, and only the client's own, reads or deletes a
    registration; deleting ends the client and its grants."""
    a = register_from_fresh_address(env, {"client_name": "mgmt-a", "redirect_uris": ["https://mgmt-a.example/cb"],
                                          "token_endpoint_auth_method": "none"}).json()
    b = register_from_fresh_address(env, {"client_name": "mgmt-b", "redirect_uris": ["https://mgmt-b.example/cb"],
                                          "token_endpoint_auth_method": "none"}).json()
    uri = a["registration_client_uri"]
    others = {"Authorization": f"Bearer {b['registration_access_token']}"}
    with unchanged_sync(env):
        anonymous = get(uri)
        refused = [get(uri, headers=others), httpx2.delete(uri, headers=others, timeout=30),
                   httpx2.delete(uri, headers={"Authorization": "Bearer " + secrets.token_urlsafe(32)}, timeout=30),
                   get(uri.rsplit("/", 1)[0] + "/no-such-client", headers=others)]
    for r in refused:    # RFC 7592 §2.1-2.3 / RFC 6750 §3.1: 401 invalid_token
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", (r.status_code, r.text[:200])
        assert www_authenticate(r.headers.get("www-authenticate", ""))[1].get("error") == "invalid_token", r.headers

    own = {"Authorization": f"Bearer {a['registration_access_token']}"}
    read = get(uri, headers=own)
    assert read.status_code == 200 and read.json()["client_id"] == a["client_id"]
    # The client signs someone in, then deletes itself: its tokens end, and it is unknown.
    c = code_for(env, a["client_id"], redirect_uri="https://mgmt-a.example/cb")
    r = exchange(env, c)
    assert r.status_code == 200, r.text
    t = r.json()
    assert httpx2.delete(uri, headers=own, timeout=30).status_code == 204
    assert_token_error(refresh(env, a["client_id"], t["refresh_token"]), 401, "invalid_client")
    # README "revocation across nodes": "This process fills them at once when it revokes".
    immediate = mcp_post(env, t["access_token"]).status_code
    took = assert_refused_within(env, t["access_token"], 6)
    assert_error_page(get(authorize_url(env, a["client_id"], "https://mgmt-a.example/cb", pkce()[1], "x")), "unknown client")
    # The process that revokes refuses the token at once, not after its next poll.
    assert immediate == 401, f"still accepted after DELETE {uri} (refused after {took:.1f} s)"
    # No credentials at all (RFC 7592 §2.1 → RFC 6750 §3.1): 401 with a Bearer challenge that
    # carries no error code.
    assert anonymous.status_code == 401, anonymous.status_code
    scheme, params = www_authenticate(anonymous.headers.get("www-authenticate", ""))
    assert scheme.lower() == "bearer" and "error" not in params, anonymous.headers



def setup_link_of(d) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = re.search(r"(http://\S+/setup\?token=[A-Za-z0-9_\-]+)", d.log()[d.log().rfind(str(d.config)):])
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise AssertionError("no setup link in the log")


def users_json(d) -> list[dict]:
    out = subprocess.run([str(DOORMAN_BIN), "users", "list", "--json", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_setup_link_is_dead_once_accounts_exist(py_upstream):
    """The first-run link creates the *first* administrator (README, setup.rs). A new Doorman
    prints one; the operator then makes the first account with the CLI instead. The link must no
    longer create an administrator. (Own Doorman: in the module's, the clock has moved past the
    link's hour, which would make this pass for the wrong reason.)"""
    d = accounts_doorman("doorman-setup-late", [{"name": "py", "url": py_upstream.url}])
    try:
        link = setup_link_of(d)
        add_user(d, "operator", "operator-" + secrets.token_urlsafe(12), admin=True)
        with httpx2.Client(timeout=30) as c:
            page = c.get(link)
            if page.status_code == 200:
                form = next(f for f in forms_of(page.text) if "password" in f.fields)
                c.post(f"{d.base}/setup", data={**form.fields, "username": "mallory", "email": "",
                                                 "password": "mallory-" + secrets.token_urlsafe(12)})
        created = [u for u in users_json(d) if u.get("username") == "mallory"]
        assert not created, created
        assert page.status_code == 404
    finally:
        d.stop()


def setup_race(py_upstream, n: int) -> tuple[list[dict], list[int]]:
    """A new Doorman, its first-run link opened once, then `n` simultaneous POST /setup with it
    (distinct usernames). Returns (administrators, statuses)."""
    d = accounts_doorman("doorman-setup-race", [{"name": "py", "url": py_upstream.url}])
    try:
        link = setup_link_of(d)
        with httpx2.Client(timeout=30) as c:
            page = c.get(link)
            assert page.status_code == 200, page.text[:300]
            form = next(f for f in forms_of(page.text) if "password" in f.fields)
            csrf = next(ck.value for ck in c.cookies.jar if ck.name.endswith("doorman_csrf"))
        names = itertools.count()

        def post():
            with httpx2.Client(timeout=60, cookies={"doorman_csrf": csrf}) as cc:
                return cc.post(f"{d.base}/setup", data={**form.fields, "username": f"admin{next(names)}", "email": "",
                                                        "password": "admin-" + secrets.token_urlsafe(12)})

        statuses = [r.status_code for r in race(n, post)]
        return [u for u in users_json(d) if u.get("admin")], statuses
    finally:
        d.stop()


def test_setup_link_is_single_use_under_concurrency(py_upstream):
    """Simultaneous POST /setup with the same one-time link: one administrator at most. The race
    window is timing-dependent, so up to three fresh Doormans are tried."""
    for _ in range(3):
        admins, statuses = setup_race(py_upstream, 6)
        assert len(admins) == 1, (admins, statuses)


@pytest.fixture(scope="module")
def first_run(py_upstream):
    """A Doorman with no accounts yet and its first-run link; every case refuses, so it stays empty."""
    d = accounts_doorman("doorman-first-run", [{"name": "py", "url": py_upstream.url}], server=QUIET_STORE)
    try:
        yield d, setup_link_of(d)
    finally:
        d.stop()


SETUP_REFUSED = [
    ("forged-link", {"token": "FORGED"}, 404, "This setup link is not valid"),
    ("no-link", {"token": None}, 404, "This setup link is not valid"),
    ("no-csrf", {"csrf": None}, 400, "Form expired"),
    ("wrong-csrf", {"csrf": "FORGED"}, 400, "Form expired"),
    ("short-password", {"password": "short"}, 400, "too short"),
    ("invalid-username", {"username": "bad name!"}, 400, "invalid username"),
    ("nul-in-username", {"username": "admin\x00"}, 400, "invalid username"),
    ("overlong-username", {"username": "a" * 65}, 400, "invalid username"),
    ("markup-username", {"username": "<script>alert(1)</script>"}, 400, "invalid username"),
    ("invalid-email", {"email": "not-an-email"}, 400, "invalid email"),
]


@pytest.mark.parametrize("over,status,reason", [pytest.param(*c[1:], id=c[0]) for c in SETUP_REFUSED])
def test_setup_form_refused(first_run, over, status, reason):
    """The first-run form with a forged link, without its CSRF pair, or with a value the account
    rules refuse: the page says why, no administrator is made, and the link is given back
    (setup.rs: "a typo does not burn the link"). The controls: the concurrent setup test makes
    an administrator through the same form; the link still opens afterwards."""
    d, link = first_run
    with httpx2.Client(timeout=30) as c:
        page = c.get(link)
        assert page.status_code == 200, page.text[:200]
        form = next(f for f in forms_of(page.text) if "password" in f.fields)
        data = {**form.fields, "username": "admin", "email": "", "password": "admin-" + secrets.token_urlsafe(12)}
        for k, v in over.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = secrets.token_urlsafe(24) if v == "FORGED" else v
        with store_unchanged(d, settle=0.0):         # /setup records no audit event
            r = c.post(f"{d.base}/setup", data=data)
        assert_error_page(r, reason, status=status)
        assert c.get(link).status_code == 200          # the link is not spent
    assert users_json(d) == []


def test_disabling_a_person_ends_their_sign_ins(py_upstream):
    """`doorman users disable`: refresh tokens fail at once, access tokens within the revocation
    poll (2 s), and their browser sign-in no longer yields codes. Own Doorman: the module's clock
    has been moved forward, and the CLI writes with the real clock."""
    d = accounts_doorman("doorman-disable", [{"name": "py", "url": py_upstream.url}], extra_toml=clients_toml(),
                         env={CONF_SECRET_ENV: CONF_SECRET})
    e = Env(d, None, None)
    try:
        add_user(d, "dave", PASSWORDS["dave"])
        b = Browser(d)
        c = code_for(e, "web", user="dave", browser=b)
        t = exchange(e, c).json()
        assert_mcp_accepts(e, t["access_token"])
        out = subprocess.run([str(DOORMAN_BIN), "users", "disable", "dave", "--config", str(d.config)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert_token_error(refresh(e, "web", t["refresh_token"]), 400, "invalid_grant")
        assert_refused_within(e, t["access_token"], 6)
        # The browser is signed out: a new flow stops at the sign-in page, and signing in is refused.
        _, challenge = pkce()
        r = b.get(authorize_url(e, "web", PUBLIC["web"], challenge, "s"))
        assert r.status_code in (302, 303) and urlparse(urljoin(d.base, r.headers["location"])).path == "/sign-in", r.headers
        url = urljoin(d.base, r.headers["location"])
        refused = b.submit(url, sign_in_form(b.get(url)), credentials("dave"))
        assert refused.status_code == 401, (refused.status_code, refused.headers.get("location"))
        b.close()
    finally:
        d.stop()


def test_registration_rate_limit_ignores_forwarded_headers(env):
    """No proxy is configured as trusted: X-Forwarded-For / Forwarded cannot buy a fresh budget."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{next(_SOURCES)}")
    statuses = []
    with httpx2.Client(transport=transport, timeout=30) as c:
        for i in range(4):
            spoof = f"203.0.113.{i + 1}"
            r = c.post(f"{env.base}/oauth/register",
                       headers={"X-Forwarded-For": spoof, "X-Real-IP": spoof, "Forwarded": f"for={spoof}"},
                       json={"client_name": f"spoof-{i}", "redirect_uris": [f"https://spoof{i}.example/cb"]})
            statuses.append(r.status_code)
            record_registration(r)
    assert statuses == [201, 201, 201, 429], statuses


# --- Client ID Metadata Documents ----------------------------------------------------------------

CIMD_REDIRECT = "https://cimd.example/cb"


def cimd_doc(url: str, **over) -> dict:
    return {"client_id": url, "client_name": "CIMD app", "redirect_uris": [CIMD_REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", **over}


def put_cimd(e: Env, name: str, **over) -> str:
    url = e.docs.url(f"/{name}.json")
    doc = cimd_doc(url, **over)
    e.docs.put_json(f"/{name}.json", doc)
    return url


def cimd_authorize(e: Env, client_id: str, redirect_uri: str = CIMD_REDIRECT) -> httpx2.Response:
    _, challenge = pkce()
    return get(authorize_url(e, client_id, redirect_uri, challenge, secrets.token_urlsafe(8)))


@pytest.mark.parametrize("padding", [0, 4000], ids=["plain", "4KB"])
def test_cimd_valid_document_works(env, padding):
    """The control: a valid document (also one just under 5 KiB) completes a flow."""
    url = put_cimd(env, f"good-{padding}", **({"x_padding": "p" * padding} if padding else {}))
    c = code_for(env, url, redirect_uri=CIMD_REDIRECT)
    r = exchange(env, c)
    assert r.status_code == 200, r.text


def test_cimd_client_id_differs_from_url(env):
    url = put_cimd(env, "mismatch", client_id=env.docs.url("/someone-else.json"))
    with unchanged_sync(env):
        r = cimd_authorize(env, url)
    assert_error_page(r, "unknown client", "client_id does not match")
    assert "/mismatch.json" in env.docs.hits     # it was fetched, and refused for what it says


def test_cimd_oversized_document(env):
    url = put_cimd(env, "big", x_padding="p" * 6 * 1024)
    with unchanged_sync(env):
        r = cimd_authorize(env, url)
    assert_error_page(r, "unknown client", "larger than")


def test_cimd_redirect_uri_not_in_document(env):
    url = put_cimd(env, "listed")
    with unchanged_sync(env):
        r = cimd_authorize(env, url, "https://evil.example/cb")
    assert_error_page(r, "redirect_uri")


@pytest.mark.parametrize("client_id", [
    "https://10.0.0.1/client.json",
    "https://169.254.169.254/latest/meta-data/client.json",
    "https://192.168.1.1/client.json",
    "https://172.16.0.1/client.json",
    "https://[fd00::1]/client.json",
    "https://[::ffff:10.0.0.1]/client.json",
    "https://0x0a000001/client.json",
    "https://0.0.0.0/client.json",
    "http://example.com/client.json",
], ids=["10/8", "metadata-169.254", "192.168/16", "172.16/12", "fc00::/7", "v4-mapped-v6", "hex-10.0.0.1",
        "0.0.0.0", "plain-http-not-loopback"])
def test_cimd_refused_addresses(env, client_id):
    """Refused by the SSRF guard ("… resolves to a private/link-local/… address"); a plain-http
    URL off loopback is not a metadata document URL at all, even in development mode."""
    reason = "resolves to" if client_id.startswith("https://") else "unknown client_id"
    with unchanged_sync(env):
        r = cimd_authorize(env, client_id)
    assert_error_page(r, "unknown client", reason)


def canary_urls() -> list[str]:
    """Document URLs naming this machine's own private addresses (and, for IPv4, the same
    address in the encodings custom parsers miss), as templates for the canary's port."""
    urls = []
    for a in LOCAL_PRIVATE:
        if ":" in a:
            urls += [f"https://[{a}]:{{port}}/client.json", f"http://[{a}]:{{port}}/client.json"]
        else:
            n = int(ip_address(a))
            urls += [f"https://{a}:{{port}}/client.json", f"http://{a}:{{port}}/client.json",
                     f"https://[::ffff:{a}]:{{port}}/client.json", f"https://{hex(n)}:{{port}}/client.json",
                     f"https://{n}:{{port}}/client.json"]
    return urls


LOCAL_PRIVATE = local_private_addresses()


@pytest.mark.parametrize("template", canary_urls() or [pytest.param("", marks=pytest.mark.skip("no private address here"))])
def test_cimd_private_address_of_this_machine_is_never_connected(env, template):
    """With a listener on every local address: a document URL at one of this machine's private
    addresses is refused before any connection (a missing guard would connect, then fail)."""
    before = len(env.canary.connections)
    reason = "resolves to" if template.startswith("https://") else "unknown client_id"
    with unchanged_sync(env):
        r = cimd_authorize(env, template.format(port=env.canary.port))
    assert_error_page(r, "unknown client", reason)
    time.sleep(0.2)
    assert env.canary.connections[before:] == [], env.canary.connections


@pytest.mark.skipif(not LOCAL_PRIVATE, reason="no private address here")
def test_cimd_redirect_to_a_private_address_is_not_followed(env):
    a = LOCAL_PRIVATE[0]
    target = f"http://{f'[{a}]' if ':' in a else a}:{env.canary.port}/client.json"
    env.docs.docs["/hop.json"] = (302, {"Location": target}, b"")
    before = len(env.canary.connections)
    with unchanged_sync(env):
        r = cimd_authorize(env, env.docs.url("/hop.json"))
    assert_error_page(r, "unknown client", "redirect")
    time.sleep(0.2)
    assert env.canary.connections[before:] == [], env.canary.connections


# --- The secret scan (last: it collects what every test above saw) --------------------------------

REQUIRED_KINDS = ("password", "client_secret", "access_token", "refresh_token", "code")


def exercise(e: Env) -> None:
    """Run on its own, the scan still has something of every kind to look for."""
    t = tokens_for(e, "web")
    r = refresh(e, "web", t["refresh_token"])
    assert r.status_code == 200
    tokens_for(e, "conf")
    revoke(e, r.json()["access_token"], "web", "access_token")
    STORED["jti"].add(jwt_parts(r.json()["access_token"])[1]["jti"])


def needles() -> list[tuple[str, str, bytes]]:
    """(kind, form, bytes) to look for: each secret as sent, and for random tokens also their raw
    bytes and hex (a secret stored unhashed in another encoding is still stored); for access
    tokens also their signature alone."""
    out = []
    for kind, values in SEEN.items():
        for v in values:
            out.append((kind, "as-is", v.encode()))
            if kind == "access_token":
                out.append((kind, "signature", v.split(".")[2].encode()))
                continue
            if kind == "password":
                continue
            try:
                raw = b64u_decode(v.split("-", 1)[-1] if kind == "client_secret" else v)
            except (ValueError, base64.binascii.Error):
                continue
            if len(raw) >= 16:
                out.append((kind, "raw-bytes", raw))
                out.append((kind, "hex", raw.hex().encode()))
    return out


def data_files(e: Env) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((e.d.dir / "data").rglob("*")) if p.is_file() and p.name != "keyring"}
    assert "doorman.db" in files and len(files["doorman.db"]) > 0, list(files)
    return files


def log_segment(e: Env) -> bytes:
    """This Doorman's part of its log file (the artifacts log is appended across runs)."""
    text = e.d.proc.log_path.read_bytes()
    marker = f"--config {e.d.config}".encode()
    start = text.rfind(marker)
    assert start >= 0, "the log does not contain this Doorman's start line"
    start = text.rfind(b"\n", 0, start) + 1
    return text[start:]


def leaks_in(blobs: dict[str, bytes]) -> list[str]:
    found = []
    for kind, form, needle in needles():
        for name, blob in blobs.items():
            if needle in blob:
                found.append(f"{kind} ({form}, {needle[:6]!r}…) in {name}")
    return found


def assert_scan_is_not_vacuous() -> None:
    for kind in REQUIRED_KINDS:
        assert SEEN[kind], f"no {kind} was collected: the scan would prove nothing"


def test_no_secret_in_the_database(env):
    exercise(env)
    assert_scan_is_not_vacuous()
    files = data_files(env)
    everything = b"".join(files.values())
    # Controls: values that are stored in plain text are found by the same scan.
    assert b"alice" in everything
    assert STORED["sid"] and any(s.encode() in everything for s in STORED["sid"]), "no grant id found in the DB files"
    assert STORED["jti"] and any(j.encode() in everything for j in STORED["jti"]), "no revoked jti found in the DB files"
    leaks = leaks_in(files)
    assert not leaks, leaks


def test_no_secret_in_the_log(env):
    exercise(env)
    assert_scan_is_not_vacuous()
    segment = log_segment(env)
    assert str(env.d.config).encode() in segment and len(segment) > 100
    leaks = leaks_in({"log": segment})
    assert not leaks, leaks


def test_no_secret_after_shutdown(env):
    """Stopping checkpoints the WAL into doorman.db and flushes the last log lines: scan again."""
    exercise(env)
    env.d.stop()
    files = data_files(env)
    assert b"alice" in b"".join(files.values())
    leaks = leaks_in({**files, "log": log_segment(env)})
    assert not leaks, leaks
