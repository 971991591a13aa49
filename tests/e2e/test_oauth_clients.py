"""Layer 1 with real OAuth clients: Doorman as the MCP authorization server, signed into by
the Python SDK's OAuthClientProvider (dynamic registration and a Client ID Metadata Document),
the TypeScript SDK's authProvider, and the official conformance suite's authorization-server
scenarios. The person at the browser is oauth.Browser walking Doorman's real sign-in and consent
pages; nothing is mocked on Doorman's side.

Time: Doorman's clock moves with the test hook (`oauth.advance_clock`), never by sleeping. The
Python SDK decides to refresh from its own clock, so for that client the test moves the SDK's
clock by the same amount (`ClientClock`): both parties see the same hour pass. The TypeScript
SDK refreshes only when the server answers 401, so it needs no help.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import types
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx2
import jwt
import mcp.client.auth.oauth2 as sdk_oauth2
import mcp.shared.auth_utils as sdk_auth_utils
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

import oauth
from conftest import modern_headers, modern_request
from procs import ARTIFACTS, NODE, PEERS, ROOT, free_port

pytestmark = pytest.mark.timeout(300)

PASSWORD = "correct horse battery staple"
ACCESS_TOKEN_LIFETIME = 3600
PAST_EXPIRY = ACCESS_TOKEN_LIFETIME + 100
TS_OAUTH_CLIENT = ROOT / "tests" / "clients" / "ts_oauth_client.mjs"
CONFORMANCE = PEERS / "node_modules" / ".bin" / "conformance"
CONFORMANCE_ARTIFACTS = ARTIFACTS / "conformance-authorization"


# ---------------------------------------------------------------------------------------------
# Shared pieces


@pytest.fixture
def doormen(everything, py_upstream):
    """Starts accounts-mode Doormen in front of both upstreams, each with the user alice; stops them."""
    started = []

    def start(name: str, **kwargs) -> oauth.Doorman:
        # The tests let an hour pass (token expiry); stateful sessions must outlive it, so the idle
        # timeout (30 min by default, on the same clock) is raised: the point is the refresh.
        server = {"session_idle_timeout": "1d", **kwargs.pop("server", {})}
        d = oauth.accounts_doorman(name, [
            {"name": "everything", "url": everything.url},
            {"name": "py", "url": py_upstream.url},
        ], server=server, **kwargs)
        started.append(d)
        oauth.add_user(d, "alice", PASSWORD)
        return d

    yield start
    for d in started:
        d.stop()


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, unverified: the tests look at what Doorman put in it."""
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    pieces = token.split(".")
    assert len(pieces) == 3, f"not a JWS compact serialization: {token[:40]}..."
    return part(pieces[0]), part(pieces[1])


def issuer_of(d) -> str:
    return d.base


def raw_mcp_status(d, access_token: str) -> httpx2.Response:
    """One stateless MCP request with a bearer token, outside any SDK."""
    return httpx2.post(d.url, headers={**modern_headers("tools/list"), "Authorization": f"Bearer {access_token}"},
                       json=modern_request("tools/list"), timeout=30)


def client_auth(client_id: str, secret: str | None, method: str | None) -> tuple[dict, dict]:
    """(extra form fields, extra headers) authenticating a client at the token/revocation endpoints."""
    if secret and method == "client_secret_basic":
        creds = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return {}, {"Authorization": f"Basic {creds}"}
    if secret:
        return {"client_id": client_id, "client_secret": secret}, {}
    return {"client_id": client_id}, {}


def revoke(d, token: str, hint: str, client_id: str, secret: str | None = None,
           method: str | None = None) -> httpx2.Response:
    """RFC 7009 revocation request."""
    fields, headers = client_auth(client_id, secret, method)
    return httpx2.post(f"{d.base}/oauth/revoke", data={"token": token, "token_type_hint": hint, **fields},
                       headers=headers, timeout=30)


def refresh(d, refresh_token: str, client_id: str, secret: str | None = None,
            method: str | None = None) -> httpx2.Response:
    fields, headers = client_auth(client_id, secret, method)
    return httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, **fields}, headers=headers, timeout=30)


def assert_invalid_token(r: httpx2.Response, d) -> None:
    assert r.status_code == 401, (r.status_code, r.text[:300])
    www = r.headers.get("www-authenticate", "")
    assert www.startswith("Bearer "), www
    assert 'error="invalid_token"' in www, www
    assert f'resource_metadata="{d.base}/.well-known/oauth-protected-resource/mcp"' in www, www


def verify_signature(token: str, d) -> None:
    """The token verifies with the key its `kid` names in Doorman's JWKS (as any resource could)."""
    jwks = httpx2.get(f"{d.base}/oauth/jwks.json", timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in jwks["keys"] if k.get("kid") == kid]
    assert key["kty"] == "EC" and key["crv"] == "P-256", key
    assert "d" not in key, "the JWKS carries no private key material"
    # Doorman's clock runs ahead of this one in these tests: time claims were checked by Doorman.
    jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience=f"{d.base}/mcp", issuer=issuer_of(d),
               options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


def assert_access_token(token: str, d, client_id: str) -> dict:
    verify_signature(token, d)
    header, claims = jwt_parts(token)
    assert header.get("typ", "").lower() in ("at+jwt", "application/at+jwt"), header
    assert header.get("alg") == "ES256", header
    assert header.get("kid"), header
    assert claims["iss"] == issuer_of(d)
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert aud == [f"{d.base}/mcp"], claims
    assert claims["client_id"] == client_id, claims
    assert "mcp" in claims["scope"].split(), claims
    assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_LIFETIME, claims
    for k in ("sub", "jti", "sid", "auth_time"):
        assert claims.get(k) is not None, (k, claims)
    return claims


# ---------------------------------------------------------------------------------------------
# 1. The Python SDK's OAuthClientProvider


class MemoryStorage:
    """mcp.client.auth.TokenStorage in memory, keeping every value it was given."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.token_history: list[OAuthToken] = []
        self.client_history: list[OAuthClientInformationFull] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info
        self.client_history.append(client_info)


class HeadlessPerson:
    """The redirect_handler/callback_handler pair: a person who opens the authorization URL in
    their browser, signs in and approves; the client reads the code from the final redirect."""

    def __init__(self, d, username: str, password: str):
        self.browser = oauth.Browser(d)
        self.username, self.password = username, password
        self.authorization_urls: list[str] = []
        self.redirects: list[str] = []
        self.pages_seen: list[list[str]] = []  # per authorization: the Doorman pages shown (paths)

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        before = len(self.browser.pages)
        location = await anyio.to_thread.run_sync(
            self.browser.authorize, authorization_url, self.username, self.password)
        self.redirects.append(location)
        self.pages_seen.append([p.request.url.path for p in self.browser.pages[before:]
                                if p.status_code == 200 and p.request.method == "GET"])

    async def callback_handler(self) -> AuthorizationCodeResult:
        q = oauth.query_of(self.redirects[-1])
        if "code" not in q:
            raise AssertionError(f"the authorization failed: {self.redirects[-1]}")
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    def close(self):
        self.browser.close()


class ClientClock:
    """Moves the Python SDK's clock (token expiry bookkeeping) forward by an offset."""

    def __init__(self, monkeypatch):
        self.offset = 0.0
        shim = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
        shim.time = lambda: time.time() + self.offset
        monkeypatch.setattr(sdk_oauth2, "time", shim)
        monkeypatch.setattr(sdk_auth_utils, "time", shim)


def advance_both(d, clock: ClientClock, seconds: float) -> None:
    oauth.advance_clock(d, seconds)
    clock.offset += seconds


class CimdServer:
    """A Client ID Metadata Document on a plain-http loopback URL (allowed in development mode)."""

    def __init__(self, redirect_uri: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/client.json"
        self.document = {
            "client_id": self.url,
            "client_name": "Doorman e2e CIMD client",
            "client_uri": f"http://127.0.0.1:{self.port}/",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if self.path != "/client.json":
                    self.send_error(404)
                    return
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=300")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Run:
    """What one Python SDK session saw."""

    storage: MemoryStorage
    person: HeadlessPerson
    http_log: list[tuple[str, str, int]] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def since(self, mark: int) -> list[tuple[str, str, int]]:
        return self.http_log[mark:]


def the_client_id(run: Run) -> str:
    return run.storage.client_info.client_id


def the_secret(run: Run) -> tuple[str | None, str | None]:
    info = run.storage.client_info
    return info.client_secret, info.token_endpoint_auth_method


async def python_sdk_session(d, clock: ClientClock, metadata: OAuthClientMetadata, mode: str,
                             client_metadata_url: str | None = None) -> Run:
    """The whole life of one Python SDK client at Doorman, with checks at every step."""
    storage = MemoryStorage()
    person = HeadlessPerson(d, "alice", PASSWORD)
    run = Run(storage, person)
    provider = OAuthClientProvider(d.url, metadata, storage, redirect_handler=person.redirect_handler,
                                   callback_handler=person.callback_handler)
    if client_metadata_url is not None:
        # The SDK's constructor insists on https for a metadata URL; Doorman's development mode
        # accepts a plain-http loopback document, so give the provider the URL directly.
        provider.context.client_metadata_url = client_metadata_url

    async def on_response(r: httpx2.Response) -> None:
        run.http_log.append((r.request.method, r.request.url.path, r.status_code))

    http = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30, read=300),
                              event_hooks={"response": [on_response]})
    try:
        with anyio.fail_after(180):
            async with http, Client(streamable_http_client(d.url, http_client=http), mode=mode) as c:
                # -- sign in, list, call
                tools = [t.name for t in (await c.list_tools()).tools]
                run.results["tools"] = tools
                r = await c.call_tool("py_add", {"a": 2, "b": 3})
                run.results["first_call"] = (r.is_error, r.content[0].text)
                run.results["protocol_version"] = c.protocol_version
                assert len(person.authorization_urls) == 1, person.authorization_urls
                first = storage.tokens
                assert first is not None and first.refresh_token, "a refresh token is issued (README: Scopes)"

                # -- an hour passes: Doorman refuses the token, the SDK refreshes it
                advance_both(d, clock, PAST_EXPIRY)
                assert_invalid_token(raw_mcp_status(d, first.access_token), d)
                mark = len(run.http_log)
                r = await c.call_tool("everything_echo", {"message": "after an hour"})
                run.results["after_refresh"] = (r.is_error, r.content[0].text)
                run.results["refresh_requests"] = run.since(mark)
                assert len(person.authorization_urls) == 1, "refreshed, not signed in again"
                second = storage.tokens
                assert len(storage.token_history) == 2
                assert second.access_token != first.access_token
                assert second.refresh_token and second.refresh_token != first.refresh_token, "refresh tokens rotate"

                # -- RFC 7009: revoke the access token, then the refresh token
                client_id = the_client_id(run)
                secret, method = the_secret(run)
                r = revoke(d, second.access_token, "access_token", client_id, secret, method)
                assert r.status_code == 200, r.text
                assert_invalid_token(raw_mcp_status(d, second.access_token), d)
                r = revoke(d, second.refresh_token, "refresh_token", client_id, secret, method)
                assert r.status_code == 200, r.text
                r = refresh(d, second.refresh_token, client_id, secret, method)
                assert r.status_code == 400, (r.status_code, r.text)
                assert r.json()["error"] == "invalid_grant", r.text

                # -- the SDK's next call is refused with 401; it signs in again and goes on
                mark = len(run.http_log)
                r = await c.call_tool("py_add", {"a": 20, "b": 22})
                run.results["after_revocation"] = (r.is_error, r.content[0].text)
                run.results["revocation_requests"] = run.since(mark)
                third = storage.tokens
                assert len(person.authorization_urls) == 2
                assert third.access_token not in (first.access_token, second.access_token)

                # -- a refresh with a revoked refresh token fails inside the SDK too
                r = revoke(d, third.refresh_token, "refresh_token", client_id, secret, method)
                assert r.status_code == 200, r.text
                advance_both(d, clock, PAST_EXPIRY)
                mark = len(run.http_log)
                r = await c.call_tool("py_add", {"a": 1, "b": 1})
                run.results["after_failed_refresh"] = (r.is_error, r.content[0].text)
                run.results["failed_refresh_requests"] = run.since(mark)
                assert len(person.authorization_urls) == 3
    finally:
        person.close()
        # Shown by pytest when anything fails, here or in the checks after.
        print("HTTP exchanges:", *run.http_log, sep="\n  ")
        print("authorization URLs:", *person.authorization_urls, sep="\n  ")
        print("pages per authorization:", person.pages_seen)
    return run


def check_python_run(run: Run, d, expected_client_id: str | None = None) -> None:
    res = run.results
    assert "py_add" in res["tools"] and "everything_echo" in res["tools"], res["tools"]
    assert res["first_call"] == (False, "5")
    assert res["after_refresh"] == (False, "Echo: after an hour")
    assert res["after_revocation"] == (False, "42")
    assert res["after_failed_refresh"] == (False, "2")

    client_id = the_client_id(run)
    if expected_client_id is not None:
        assert client_id == expected_client_id

    # The authorization request the SDK built, and Doorman's answer to it.
    auth_url = run.person.authorization_urls[0]
    assert auth_url.startswith(f"{d.base}/oauth/authorize?"), auth_url
    q = oauth.query_of(auth_url)
    assert q["client_id"] == [client_id]
    assert q["code_challenge_method"] == ["S256"]
    assert q["resource"] == [f"{d.base}/mcp"]
    assert "mcp" in q["scope"][0].split()
    # The person signed in and approved once; later authorizations found them signed in.
    pages = run.person.pages_seen
    assert pages[0] == ["/sign-in", "/consent"], pages
    assert all("/sign-in" not in p for p in pages[1:]), pages
    redirect = oauth.query_of(run.person.redirects[0])
    assert redirect["iss"] == [issuer_of(d)], "RFC 9207: iss on the authorization response"
    assert redirect["state"] == q["state"]

    for t in run.storage.token_history:
        assert t.token_type == "Bearer"
        assert t.expires_in == ACCESS_TOKEN_LIFETIME, t.expires_in
        assert_access_token(t.access_token, d, client_id)
    # Same person every time, a fresh grant after each new sign-in.
    claims = [jwt_parts(t.access_token)[1] for t in run.storage.token_history]
    assert len({c["sub"] for c in claims}) == 1
    assert claims[0]["sid"] == claims[1]["sid"], "a refresh stays in its grant"
    assert claims[2]["sid"] != claims[1]["sid"], "a new sign-in makes a new grant"

    # The refresh was one token request, no re-authorization, no 401 seen by the SDK.
    reqs = res["refresh_requests"]
    assert ("POST", "/oauth/token", 200) in reqs, reqs
    assert all(s != 401 for _, _, s in reqs), reqs
    # After revocation: the SDK's call was refused, then it signed in again.
    reqs = res["revocation_requests"]
    assert reqs[0] == ("POST", "/mcp", 401), reqs
    assert ("GET", "/.well-known/oauth-protected-resource/mcp", 200) in reqs, reqs
    assert ("POST", "/oauth/token", 200) in reqs and reqs[-1] == ("POST", "/mcp", 200), reqs
    # A refresh with the revoked refresh token failed (invalid_grant), then the same recovery.
    reqs = res["failed_refresh_requests"]
    assert reqs[0] == ("POST", "/oauth/token", 400), reqs
    assert ("POST", "/mcp", 401) in reqs, reqs
    assert reqs[-1] == ("POST", "/mcp", 200), reqs


@pytest.mark.parametrize("auth_method,mode", [
    ("none", "auto"),                  # public client, 2026-07-28 (stateless)
    ("client_secret_basic", "legacy"),  # confidential registration, 2025-11-25 (stateful)
])
def test_python_sdk_with_dynamic_registration(doormen, monkeypatch, auth_method, mode):
    d = doormen(f"doorman-oauth-py-dcr-{auth_method}")
    clock = ClientClock(monkeypatch)
    callback = f"http://127.0.0.1:{free_port()}/callback"
    metadata = OAuthClientMetadata(redirect_uris=[callback], client_name="Doorman e2e DCR client",
                                   token_endpoint_auth_method=auth_method,
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"])
    run = anyio.run(python_sdk_session, d, clock, metadata, mode)

    registrations = [x for x in run.http_log if x[:2] == ("POST", "/oauth/register")]
    assert len(registrations) == 1 and registrations[0][2] in (200, 201), run.http_log
    info = run.storage.client_info
    assert info.token_endpoint_auth_method == auth_method
    if auth_method == "none":
        assert info.client_secret is None
    else:
        assert info.client_secret, "a confidential registration gets a secret"
        assert info.client_secret_expires_at is not None, "RFC 7591 §3.2.1: required with a secret"
    assert [str(u) for u in info.redirect_uris] == [callback]
    check_python_run(run, d)
    expected_version = "2025-11-25" if mode == "legacy" else "2026-07-28"
    assert run.results["protocol_version"] == expected_version


def test_python_sdk_with_a_client_id_metadata_document(doormen, monkeypatch):
    d = doormen("doorman-oauth-py-cimd")
    metadata_doc = httpx2.get(f"{d.base}/.well-known/oauth-authorization-server", timeout=10).json()
    assert metadata_doc.get("client_id_metadata_document_supported") is True, metadata_doc
    clock = ClientClock(monkeypatch)
    callback = f"http://127.0.0.1:{free_port()}/callback"
    cimd = CimdServer(callback)
    try:
        metadata = OAuthClientMetadata(redirect_uris=[callback], client_name="Doorman e2e CIMD client",
                                       token_endpoint_auth_method="none",
                                       grant_types=["authorization_code", "refresh_token"], response_types=["code"])
        run = anyio.run(python_sdk_session, d, clock, metadata, "legacy", cimd.url)
    finally:
        cimd.stop()
    assert not [x for x in run.http_log if x[1] == "/oauth/register"], "no dynamic registration with CIMD"
    assert "/client.json" in cimd.requests, "Doorman fetched the metadata document"
    check_python_run(run, d, expected_client_id=cimd.url)
    assert run.results["protocol_version"] == "2025-11-25"


def read_http_response(sock: socket.socket, timeout: float = 5) -> tuple[str, bytes] | None:
    """(head, body) of one HTTP/1.1 response with a Content-Length, or None if the server closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head.decode("latin-1"), body


def test_a_401_before_the_body_leaves_the_connection_usable(doormen):
    """A client sends a request's headers and body in two writes. Doorman refuses it (no token);
    whether it answers before or after the body arrives, the connection must stay usable for the
    client's next request, or the answer must say `Connection: close` (RFC 9112 §9.6)."""
    d = doormen("doorman-oauth-early-401")
    body = json.dumps(modern_request("tools/list")).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in modern_headers("tools/list").items())
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n{head}"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        first = read_http_response(sock, timeout=0.5)  # an early answer, if Doorman gives one
        if first is None:
            sock.sendall(body)  # the body comes a little later (a slow network)
            first = read_http_response(sock)
            body = b""
        assert first is not None and first[0].startswith("HTTP/1.1 401"), first
        if re.search(r"(?im)^connection:.*\bclose\b", first[0]):
            return  # the client knows not to reuse the connection
        try:
            sock.sendall(body)
            sock.sendall(f"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\n"
                         f"Host: 127.0.0.1:{d.port}\r\n\r\n".encode())
            second = read_http_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            second = None
    assert second is not None, "the connection broke after the 401 without Connection: close"
    assert second[0].startswith("HTTP/1.1 200"), second[0]
    assert json.loads(second[1])["resource"] == f"{d.base}/mcp"


# ---------------------------------------------------------------------------------------------
# 2. The TypeScript SDK's authProvider


class LineProcess:
    """A child process that talks in JSON lines on stdout and takes commands on stdin."""

    def __init__(self, argv: list[str], name: str, env: dict | None = None):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.stderr_path = ARTIFACTS / f"{name}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env={**os.environ, **(env or {})}, cwd=str(ROOT))
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 60) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; stderr: {self.stderr()}") from None
        if line is None:
            self.proc.wait(10)
            raise AssertionError(f"exited {self.proc.returncode} early; stdout: {self.seen}; stderr: {self.stderr()}")
        self.seen.append(line)
        return line

    def event(self, name: str, timeout: float = 60) -> dict:
        while True:
            line = self.line(timeout)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == name:
                return msg
            raise AssertionError(f"expected event {name}, got {msg}")

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode


def test_typescript_sdk_signs_in_and_refreshes(doormen):
    d = doormen("doorman-oauth-ts")
    ts = LineProcess([str(NODE), str(TS_OAUTH_CLIENT), d.url], "ts-oauth-client",
                     env={"TS_TOOL": "py_add", "TS_TOOL_ARGS": json.dumps({"a": 2, "b": 3})})
    browser = oauth.Browser(d)
    try:
        start = ts.event("authorize")
        url = start["url"]
        assert url.startswith(f"{d.base}/oauth/authorize?"), url
        q = oauth.query_of(url)
        assert q["code_challenge_method"] == ["S256"]
        assert q["resource"] == [f"{d.base}/mcp"]
        assert q["redirect_uri"] == [start["redirectUrl"]]
        assert q["scope"][0].split()[0] == "mcp"
        location = browser.authorize(url, "alice", PASSWORD)
        assert location.startswith(start["redirectUrl"] + "?"), location
        r = httpx2.get(location, timeout=30)  # the browser follows the redirect to the client
        assert r.status_code == 200, r.text

        seen = ts.event("connected")
        client_id = seen["clientInformation"]["client_id"]
        assert q["client_id"] == [client_id]
        assert seen["callback"] == {"stateMatches": True, "iss": issuer_of(d), "error": None, "codeCount": 1}
        assert seen["serverInfo"]["name"] == "doorman"
        assert seen["protocolVersion"] == "2025-11-25"
        assert seen["sessionId"]
        assert "py_add" in seen["tools"] and "everything_echo" in seen["tools"]
        assert seen["call"]["content"][0]["text"] == "5" and not seen["call"].get("isError")
        assert seen["authorizeCount"] == 1
        [first] = seen["tokens"]
        assert first["token_type"].lower() == "bearer" and first["refresh_token"]
        assert first["expires_in"] == ACCESS_TOKEN_LIFETIME
        assert_access_token(first["access_token"], d, client_id)

        # An hour later: Doorman answers 401, the SDK refreshes and retries, in the same session.
        oauth.advance_clock(d, PAST_EXPIRY)
        assert_invalid_token(raw_mcp_status(d, first["access_token"]), d)
        ts.send("again")
        again = ts.event("again")
        assert again["call"]["content"][0]["text"] == "5" and not again["call"].get("isError")
        assert again["authorizeCount"] == 1, "refreshed, not signed in again"
        assert again["sessionId"] == seen["sessionId"], "the session belongs to the same person"
        assert len(again["tokens"]) == 2
        second = again["tokens"][1]
        assert second["expires_in"] == ACCESS_TOKEN_LIFETIME
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        claims = assert_access_token(second["access_token"], d, client_id)
        assert claims["sid"] == jwt_parts(first["access_token"])[1]["sid"]

        # The first refresh token, rotated away, comes back (stolen): Doorman refuses it and ends the
        # whole grant (README: Tokens), so the live access and refresh tokens die with it.
        r = refresh(d, first["refresh_token"], client_id)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert_invalid_token(raw_mcp_status(d, second["access_token"]), d)
        r = refresh(d, second["refresh_token"], client_id)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

        # The client's next call: 401, its refresh fails (invalid_grant), it sends the person to
        # sign in again; the browser is still signed in, and the session goes on.
        ts.send("again")
        start = ts.event("authorize")
        q = oauth.query_of(start["url"])
        assert q["client_id"] == [client_id], "the registration outlives the grant"
        location = browser.authorize(start["url"], "alice", PASSWORD)
        assert httpx2.get(location, timeout=30).status_code == 200
        third = ts.event("again")
        assert third["reauthorized"] == {"stateMatches": True, "iss": issuer_of(d), "error": None, "codeCount": 1}
        assert "tokens" in third["invalidations"], third["invalidations"]
        assert third["call"]["content"][0]["text"] == "5" and not third["call"].get("isError")
        assert third["authorizeCount"] == 2
        assert third["sessionId"] == seen["sessionId"]
        assert len(third["tokens"]) == 3
        claims3 = assert_access_token(third["tokens"][2]["access_token"], d, client_id)
        assert claims3["sid"] != claims["sid"], "a new grant"
        assert claims3["sub"] == claims["sub"]

        ts.send("quit")
        ts.event("done")
        assert ts.proc.wait(30) == 0, ts.stderr()
    finally:
        browser.close()
        ts.stop()


# ---------------------------------------------------------------------------------------------
# 3. The conformance suite's authorization-server scenarios

CONFIDENTIAL_SECRET = "conformance-confidential-secret-" + "x" * 16


def conformance_clients(public_port: int, confidential_port: int) -> str:
    return (
        "[[sign_in.clients]]\n"
        'client_id = "conformance-public"\n'
        'name = "Conformance (public)"\n'
        f'redirect_uris = ["http://127.0.0.1:{public_port}/callback"]\n'
        "[[sign_in.clients]]\n"
        'client_id = "conformance-confidential"\n'
        'name = "Conformance (confidential)"\n'
        f'redirect_uris = ["http://127.0.0.1:{confidential_port}/callback"]\n'
        'client_secret_env = "DOORMAN_E2E_CONFORMANCE_SECRET"\n'
    )


def run_authorization_suite(d, out: Path, client_id: str, port: int, *extra: str) -> tuple[int, dict, str]:
    """Runs `conformance authorization` against Doorman's issuer, playing the person at the browser
    when the code-grant scenario asks. Returns (exit code, {scenario:check: status}, output)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = [str(NODE), str(CONFORMANCE), "authorization", "--url", issuer_of(d), "--client-id", client_id,
            "--port", str(port), "-o", str(out), *extra]
    proc = LineProcess(argv, f"conformance-authorization-{out.name}")
    browser = oauth.Browser(d)
    try:
        authorization_url = None
        while authorization_url is None:
            line = proc.line(timeout=120)
            if line.startswith(f"{d.base}/oauth/authorize?"):
                authorization_url = line.strip()
            elif "=== SUMMARY ===" in line:
                break  # the code-grant scenario never asked (e.g. the metadata scenario failed)
        if authorization_url is not None:
            location = browser.authorize(authorization_url, "alice", PASSWORD)
            assert location.startswith(f"http://127.0.0.1:{port}/callback?"), location
            deadline = time.monotonic() + 20
            while True:  # the scenario's callback server may still be starting
                try:
                    r = httpx2.get(location, timeout=10)
                    break
                except httpx2.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert r.status_code == 200, r.text
        code = proc.proc.wait(120)
        while True:
            try:
                proc.line(timeout=5)
            except AssertionError:
                break
    finally:
        browser.close()
        proc.stop()
    output = "\n".join(proc.seen) + "\n--- stderr ---\n" + proc.stderr_path.read_text(errors="replace")
    (out / "output.txt").write_text(output)
    checks = {}
    for f in sorted(out.rglob("checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", f.parent.name.removeprefix("authorization-server-"))
        for c in json.loads(f.read_text()):
            checks[f"{scenario}:{c['id']}"] = c
    return code, checks, output


EXPECTED_AUTHORIZATION_CHECKS = {
    "authorization-server-metadata-endpoint:authorization-server-metadata",
    "authorization-server-metadata-endpoint:authorization-server-metadata-cimd",
    "authorization-code-grant:authorization-code-grant",
}


@pytest.fixture
def conformance_doorman(doormen):
    public_port, confidential_port = free_port(), free_port()
    d = doormen("doorman-oauth-conformance", extra_toml=conformance_clients(public_port, confidential_port),
                env={"DOORMAN_E2E_CONFORMANCE_SECRET": CONFIDENTIAL_SECRET})
    d.public_port, d.confidential_port = public_port, confidential_port
    return d


def summarize(checks: dict) -> dict:
    return {k: (c["status"], c.get("errorMessage")) for k, c in checks.items()}


@pytest.mark.parametrize("with_resource", [True, False], ids=["resource", "no-resource"])
def test_conformance_authorization_public_client(conformance_doorman, with_resource):
    d = conformance_doorman
    extra = ["--resource", f"{d.base}/mcp"] if with_resource else []
    out = CONFORMANCE_ARTIFACTS / ("public" if with_resource else "public-no-resource")
    code, checks, output = run_authorization_suite(d, out, "conformance-public", d.public_port, *extra)
    (CONFORMANCE_ARTIFACTS / "summary.md").write_text(summary_text())
    assert set(checks) == EXPECTED_AUTHORIZATION_CHECKS, (sorted(checks), output[-2000:])
    assert {k: c["status"] for k, c in checks.items()} == dict.fromkeys(EXPECTED_AUTHORIZATION_CHECKS, "SUCCESS"), \
        summarize(checks)
    assert "Total: 3 passed, 0 failed" in output, output[-2000:]
    assert code == 0, output[-2000:]
    grant = checks["authorization-code-grant:authorization-code-grant"]["details"]
    assert oauth.query_of(grant["authorizationResponseUrl"])["iss"] == [issuer_of(d)]


def test_conformance_authorization_confidential_client(conformance_doorman):
    """The suite's code-grant scenario picks its token-endpoint auth method from the metadata and
    prefers `none` whenever the server lists it, even when given --client-secret
    (`selectTokenAuthMethod` in @modelcontextprotocol/conformance 0.2.0-alpha.12). Doorman lists
    `none` (it has public clients), so the suite sends only the client id for a confidential client
    and Doorman rightly refuses. The metadata scenario must pass; the code grant must fail at the
    token endpoint with invalid_client (and nowhere else). The confidential client's real code grant,
    with its secret, is checked right after, by hand."""
    d = conformance_doorman
    out = CONFORMANCE_ARTIFACTS / "confidential"
    code, checks, output = run_authorization_suite(d, out, "conformance-confidential", d.confidential_port,
                                                   "--client-secret", CONFIDENTIAL_SECRET,
                                                   "--resource", f"{d.base}/mcp")
    (CONFORMANCE_ARTIFACTS / "summary.md").write_text(summary_text())
    assert set(checks) == EXPECTED_AUTHORIZATION_CHECKS, (sorted(checks), output[-2000:])
    meta = checks["authorization-server-metadata-endpoint:authorization-server-metadata"]
    assert meta["status"] == "SUCCESS", summarize(checks)
    assert checks["authorization-server-metadata-endpoint:authorization-server-metadata-cimd"]["status"] == "SUCCESS"
    methods = meta["details"]["body"].get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    grant = checks["authorization-code-grant:authorization-code-grant"]
    if "none" in methods:
        assert grant["status"] == "FAILURE", summarize(checks)
        assert re.fullmatch(r"Invalid status code: 40[01]", grant.get("errorMessage", "")), summarize(checks)
        assert code == 1
    else:
        assert grant["status"] == "SUCCESS", summarize(checks)
        assert code == 0

    # The same client's code grant done properly: client_secret_basic, then client_secret_post.
    for method in ("client_secret_basic", "client_secret_post"):
        tokens = code_grant_by_hand(d, "conformance-confidential", d.confidential_port, CONFIDENTIAL_SECRET, method)
        assert_access_token(tokens["access_token"], d, "conformance-confidential")
        r = refresh(d, tokens["refresh_token"], "conformance-confidential", CONFIDENTIAL_SECRET, method)
        assert r.status_code == 200, r.text
    # Without the secret, or with a wrong one: invalid_client (RFC 6749 §5.2).
    verifier, challenge = oauth.pkce()
    location = authorize_by_hand(d, "conformance-confidential", d.confidential_port, challenge)
    code_ = oauth.query_of(location)["code"][0]
    r = token_request(d, code_, verifier, "conformance-confidential", d.confidential_port, "wrong-secret",
                      "client_secret_basic")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert r.headers.get("www-authenticate", "").startswith("Basic"), r.headers


def authorize_by_hand(d, client_id: str, port: int, challenge: str) -> str:
    browser = oauth.Browser(d)
    try:
        url = httpx2.URL(f"{d.base}/oauth/authorize", params={
            "response_type": "code", "client_id": client_id, "redirect_uri": f"http://127.0.0.1:{port}/callback",
            "state": "s-" + str(time.time_ns()), "code_challenge": challenge, "code_challenge_method": "S256",
            "resource": f"{d.base}/mcp", "scope": "mcp"})
        location = browser.authorize(str(url), "alice", PASSWORD)
    finally:
        browser.close()
    assert "code" in oauth.query_of(location), location
    return location


def token_request(d, code: str, verifier: str, client_id: str, port: int, secret: str, method: str) -> httpx2.Response:
    fields, headers = client_auth(client_id, secret, method)
    return httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": f"http://127.0.0.1:{port}/callback", "resource": f"{d.base}/mcp", **fields},
        headers=headers, timeout=30)


def code_grant_by_hand(d, client_id: str, port: int, secret: str, method: str) -> dict:
    verifier, challenge = oauth.pkce()
    location = authorize_by_hand(d, client_id, port, challenge)
    r = token_request(d, oauth.query_of(location)["code"][0], verifier, client_id, port, secret, method)
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers.get("cache-control", "")
    return r.json()


def summary_text() -> str:
    lines = ["# Conformance: authorization-server scenarios (@modelcontextprotocol/conformance 0.2.0-alpha.12)", ""]
    for d in sorted(p for p in CONFORMANCE_ARTIFACTS.iterdir() if p.is_dir()):
        statuses = []
        for f in sorted(d.rglob("checks.json")):
            for c in json.loads(f.read_text()):
                statuses.append(f"{c['id']}={c['status']}" + (f" ({c['errorMessage']})" if c.get("errorMessage") else ""))
        lines.append(f"- {d.name}: {', '.join(statuses) or 'no checks'}")
    return "\n".join(lines) + "\n"
