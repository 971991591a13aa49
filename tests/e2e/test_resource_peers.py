"""Smoke tests of the layer-2 peers: tests/peers/idp.mjs as a resource's own authorization server
(JWT access tokens for one audience, refresh, revocation, its request log) and
tests/peers/resource_upstream.py, the protected MCP server that takes only those tokens. No
Doorman here: these prove the peers behave like GitHub/Linear and their MCP servers before
Doorman meets them."""

from __future__ import annotations

import hashlib
import json
import secrets

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from idp import account, idp_client, resource_server, start_idp
from oauth import jwt_es256, jwt_parts, jwt_unsigned, new_es256_key
from procs import free_port
from resource_peers import (challenge_params, discover_from_challenge, obtain_tokens, refresh, register_public_client,
                            revoke, start_resource_upstream)

SECRET = "notes-secret-" + secrets.token_hex(8)
CLIENT, FIRST_PARTY = "doorman-notes", "doorman-notes-1p"
CALLBACK = "http://127.0.0.1:9/connections/callback"  # never contacted: the walk stops at the redirect
ALICE = account("alice", "alice-pw", sub="gh-alice")
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "probe", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Resource:
    """A resource's authorization server and its MCP server, sharing one audience."""

    def __init__(self, *, self_auth: bool = False, stateless: bool = False, required_scopes: str = "", **rs):
        port = free_port()
        self.audience = f"http://127.0.0.1:{port}/mcp"
        self.idp = start_idp(clients=[idp_client(CLIENT, SECRET, [CALLBACK]),
                                      idp_client(FIRST_PARTY, SECRET, [CALLBACK], skip_consent=True)],
                             accounts=[ALICE], name="resource-idp",
                             resource_server=resource_server(self.audience, **rs))
        try:
            self.upstream = start_resource_upstream(port, self.idp.issuer, self.audience,
                                                    stateless=stateless, self_auth=self_auth,
                                                    required_scopes=required_scopes)
        except BaseException:
            self.idp.stop()
            raise

    def tokens(self, scope: str, client_id: str = CLIENT, **extra) -> dict:
        return obtain_tokens(self.idp, client_id, SECRET, CALLBACK, "alice", "alice-pw", scope, **extra)

    def stop(self) -> None:
        self.upstream.stop()
        self.idp.stop()


@pytest.fixture
def resource():
    r = Resource(access_token_ttl=120)
    yield r
    r.stop()


def call_tools(url: str, token: str, calls: list[tuple[str, dict]]) -> list[tuple[bool, str]]:
    """(is_error, text) of each tool call, made with the official Python client and a bearer token."""

    async def run():
        out = []
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http, \
                    Client(streamable_http_client(url, http_client=http)) as c:
                for name, args in calls:
                    r = await c.call_tool(name, args)
                    out.append((r.is_error, r.content[0].text))
        return out

    return anyio.run(run)


def whoami(url: str, token: str) -> dict:
    [(is_error, text)] = call_tools(url, token, [("whoami", {})])
    assert not is_error, text
    return json.loads(text)


def raw_initialize(url: str, token: str | None) -> httpx2.Response:
    headers = {**MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx2.post(url, json=INITIALIZE, headers=headers, timeout=10)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def test_a_jwt_access_token_for_the_audience_reaches_the_tools(resource):
    tokens = resource.tokens("openid email notes:read offline_access")
    assert tokens["refresh_token"] and tokens["id_token"] and tokens["expires_in"] == 120
    assert tokens["scope"] == "notes:read"  # the access token's scopes: the resource's only
    header, claims, _ = jwt_parts(tokens["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    assert claims["aud"] == resource.audience and claims["iss"] == resource.idp.issuer
    assert claims["sub"] == "gh-alice" and claims["client_id"] == CLIENT and claims["scope"] == "notes:read"

    me = whoami(resource.upstream.url, tokens["access_token"])
    assert me == {"sub": "gh-alice", "scopes": ["notes:read"], "client_id": CLIENT, "aud": resource.audience,
                  "act": None, "email": None, "iss": resource.idp.issuer, "lifetime": 120,
                  "token_sha256_prefix": fingerprint(tokens["access_token"])}
    assert tokens["access_token"] not in json.dumps(me)

    # notes:read reads; writing needs notes:write, which this token lacks.
    [read, write] = call_tools(resource.upstream.url, tokens["access_token"],
                               [("read_note", {"name": "todo"}), ("write_note", {"name": "todo", "text": "x"})])
    assert read == (False, "")
    assert write[0] is True and "insufficient scope" in write[1], write

    # Only the resource's scopes, no OIDC at all (GitHub style): no ID token, no refresh token.
    both = resource.tokens("notes:read notes:write")
    assert "id_token" not in both and "refresh_token" not in both
    assert sorted(whoami(resource.upstream.url, both["access_token"])["scopes"]) == ["notes:read", "notes:write"]
    [saved, read] = call_tools(resource.upstream.url, both["access_token"],
                               [("write_note", {"name": "todo", "text": "milk"}), ("read_note", {"name": "todo"})])
    assert saved == (False, "saved todo") and read == (False, "milk")


def test_anything_but_its_own_jwt_gets_401(resource):
    tokens = resource.tokens("openid email notes:read offline_access")
    other_port = free_port()
    elsewhere = start_resource_upstream(other_port, resource.idp.issuer, f"http://127.0.0.1:{other_port}/mcp",
                                        stateless=True, name="resource-upstream-elsewhere")
    try:
        # A good token of the same issuer, but for another audience.
        r = raw_initialize(elsewhere.url, tokens["access_token"])
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer ") and "invalid_token" in r.headers["www-authenticate"]
        assert "resource_metadata" not in r.headers["www-authenticate"]  # no --self-auth
    finally:
        elsewhere.stop()

    key = new_es256_key()
    now = int(jwt_parts(tokens["access_token"])[1]["iat"])
    doorman_like = jwt_es256({"alg": "ES256", "typ": "at+jwt", "kid": "doorman-1"},
                             {"iss": "http://127.0.0.1:8421", "aud": resource.audience, "sub": "gh-alice",
                              "client_id": CLIENT, "scope": "notes:read", "iat": now, "exp": now + 600}, key)
    header, claims, signature = jwt_parts(tokens["access_token"])
    refused = {
        "no token": None,
        "opaque": secrets.token_urlsafe(32),
        "foreign issuer's JWT": doorman_like,
        "ID token (typ JWT, aud the client)": tokens["id_token"],
        "refresh token": tokens["refresh_token"],
        "scope added, signature kept": jwt_unsigned(header, {**claims, "scope": "notes:read notes:write"}, signature),
        "alg none": jwt_unsigned({**header, "alg": "none"}, claims),
    }
    for what, token in refused.items():
        r = raw_initialize(resource.upstream.url, token)
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer "), what
    assert raw_initialize(resource.upstream.url, tokens["access_token"]).status_code == 200
    assert "refused a bearer token" in resource.upstream.log_text()
    assert tokens["access_token"] not in resource.upstream.log_text()


def test_refresh_reaches_the_provider_once_and_failures_are_injected_per_grant(resource):
    # A failure only for refresh grants: the code exchange of the sign-in passes untouched.
    resource.idp.fail("/token", 400, grant_type="refresh_token")
    tokens = resource.tokens("openid email notes:read offline_access")
    resource.idp.reset_requests()

    r = refresh(resource.idp, CLIENT, SECRET, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    [seen] = resource.idp.requests("/token")
    assert seen["injected"] is True and seen["params"]["grant_type"] == "refresh_token"
    assert seen["params"]["client_id"] == CLIENT
    assert seen["params"]["refresh_token"] == "***"

    r = refresh(resource.idp, CLIENT, SECRET, tokens["refresh_token"])  # the provider never saw the first
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["access_token"] != tokens["access_token"]
    assert resource.idp.count("/token", grant_type="refresh_token") == 2
    assert resource.idp.count("/token", grant_type="authorization_code") == 0
    real = [q for q in resource.idp.requests("/token") if not q.get("injected")]
    assert len(real) == 1 and real[0]["status"] == 200 and real[0]["params"]["client_id"] == CLIENT
    assert SECRET not in json.dumps(resource.idp.requests())
    assert tokens["refresh_token"] not in json.dumps(resource.idp.requests())

    _, claims, _ = jwt_parts(fresh["access_token"])
    assert claims["aud"] == resource.audience and claims["scope"] == "notes:read"  # the granted resource again
    assert whoami(resource.upstream.url, fresh["access_token"])["token_sha256_prefix"] == fingerprint(fresh["access_token"])

    # A rotated refresh token is spent.
    r = refresh(resource.idp, CLIENT, SECRET, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_revocations_are_logged_and_end_the_grant(resource):
    tokens = resource.tokens("openid notes:read offline_access")
    resource.idp.reset_requests()

    r = revoke(resource.idp, CLIENT, SECRET, tokens["refresh_token"], "refresh_token")
    assert r.status_code == 200, r.text
    # A JWT access token cannot be revoked at oidc-provider (RFC 7009 lets it refuse).
    r = revoke(resource.idp, CLIENT, SECRET, tokens["access_token"], "access_token")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type", r.text

    assert resource.idp.revocations() == [
        {"client_id": CLIENT, "token_type_hint": "refresh_token", "status": 200,
         "token_sha256_prefix": fingerprint(tokens["refresh_token"])},
        {"client_id": CLIENT, "token_type_hint": "access_token", "status": 400,
         "token_sha256_prefix": fingerprint(tokens["access_token"])},
    ]
    logged = resource.idp.requests("/token/revocation")
    assert [q["params"]["token"] for q in logged] == ["***", "***"]
    assert [q["params"]["token_type_hint"] for q in logged] == ["refresh_token", "access_token"]

    r = refresh(resource.idp, CLIENT, SECRET, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_always_refresh_gives_refresh_tokens_without_offline_access():
    r = Resource(access_token_ttl=30, always_refresh=True)
    try:
        for client_id in (CLIENT, FIRST_PARTY):  # consent page, and consent implied
            tokens = r.tokens("notes:read", client_id=client_id)
            assert tokens["refresh_token"] and tokens["expires_in"] == 30 and "id_token" not in tokens
            again = refresh(r.idp, client_id, SECRET, tokens["refresh_token"])
            assert again.status_code == 200, again.text
            me = whoami(r.upstream.url, again.json()["access_token"])
            assert me["client_id"] == client_id and me["scopes"] == ["notes:read"]
    finally:
        r.stop()


def test_self_auth_publishes_protected_resource_metadata_naming_the_issuer():
    r = Resource(self_auth=True, stateless=True)
    try:
        base = r.audience.removesuffix("/mcp")
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            prm = httpx2.get(base + path, timeout=10)
            assert prm.status_code == 200, (path, prm.text)
            assert prm.json()["resource"] == r.audience
            assert prm.json()["authorization_servers"] == [r.idp.issuer]
            assert prm.json()["scopes_supported"] == ["notes:read", "notes:write"]

        denied = raw_initialize(r.upstream.url, None)
        assert denied.status_code == 401
        assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in denied.headers["www-authenticate"]

        # What a client does next: the authorization server's RFC 8414 metadata, then the flow.
        meta = httpx2.get(f"{r.idp.issuer}/.well-known/oauth-authorization-server", timeout=10).json()
        assert meta["issuer"] == r.idp.issuer and {"notes:read", "notes:write"} <= set(meta["scopes_supported"])
        tokens = r.tokens("notes:read", resource=r.audience)
        assert whoami(r.upstream.url, tokens["access_token"])["sub"] == "gh-alice"
        r.idp.fail("/token", 400, error="invalid_target")  # any error body can be injected
        assert refresh(r.idp, CLIENT, SECRET, "x").json()["error"] == "invalid_target"
    finally:
        r.stop()


DOORMAN_CALLBACK = "http://127.0.0.1:8421/connect/callback"  # never contacted either


def test_a_self_authorizing_server_leads_to_registration_and_a_code_flow_with_the_resource():
    """What Doorman does with an upstream that does MCP authorization itself: 401 with
    resource_metadata -> RFC 9728 -> RFC 8414 -> RFC 7591 (a public client) -> the code flow with
    PKCE and RFC 8707 `resource` -> tokens the upstream takes; refresh names the resource again."""
    r = Resource(self_auth=True, registration=True, always_refresh=True)
    try:
        found = discover_from_challenge(r.upstream.url)
        assert found["prm"]["resource"] == r.audience
        assert found["prm"]["authorization_servers"] == [r.idp.issuer]
        assert found["prm"]["scopes_supported"] == ["notes:read", "notes:write"]
        meta = found["as_metadata"]
        assert meta["issuer"] == r.idp.issuer and meta["registration_endpoint"] == f"{r.idp.issuer}/reg"
        assert "S256" in meta["code_challenge_methods_supported"]
        assert "none" in meta["token_endpoint_auth_methods_supported"]
        assert {"authorization_code", "refresh_token"} <= set(meta["grant_types_supported"])
        assert r.idp.discovery()["registration_endpoint"] == meta["registration_endpoint"]
        assert r.idp.count("/.well-known/oauth-authorization-server") == 1
        assert r.idp.count("/reg") == 0

        client = register_public_client(r.idp, [DOORMAN_CALLBACK], scope="notes:read notes:write")
        client_id = client["client_id"]
        assert "client_secret" not in client and client["token_endpoint_auth_method"] == "none"
        assert client["redirect_uris"] == [DOORMAN_CALLBACK]
        assert client["grant_types"] == ["authorization_code", "refresh_token"]
        assert client["scope"] == "notes:read notes:write"  # the resource's scopes are fine to register
        assert r.idp.count("/reg") == 1
        [seen] = r.idp.registrations()
        assert seen["status"] == 201 and seen["client_id"] == client_id
        assert seen["params"]["token_endpoint_auth_method"] == "none"
        assert seen["params"]["redirect_uris"] == [DOORMAN_CALLBACK]
        assert client["registration_access_token"] not in json.dumps(r.idp.requests())
        [stored] = r.idp.registered_clients()
        assert stored["client_id"] == client_id and stored["has_secret"] is False

        tokens = obtain_tokens(r.idp, client_id, None, DOORMAN_CALLBACK, "alice", "alice-pw", "notes:read notes:write",
                               resource=r.audience, token_params={"resource": r.audience})
        assert tokens["refresh_token"] and tokens["scope"] == "notes:read notes:write"
        _, claims, _ = jwt_parts(tokens["access_token"])
        assert claims["aud"] == r.audience and claims["client_id"] == client_id and claims["iss"] == r.idp.issuer
        me = whoami(r.upstream.url, tokens["access_token"])
        assert me["sub"] == "gh-alice" and me["client_id"] == client_id
        assert sorted(me["scopes"]) == ["notes:read", "notes:write"]
        [auth] = r.idp.requests("/auth")
        assert auth["params"]["resource"] == r.audience and auth["params"]["code_challenge_method"] == "S256"
        [code] = [q for q in r.idp.requests("/token") if q["params"]["grant_type"] == "authorization_code"]
        assert code["params"]["resource"] == r.audience and code["params"]["client_id"] == client_id

        again = refresh(r.idp, client_id, None, tokens["refresh_token"], resource=r.audience)
        assert again.status_code == 200, again.text
        assert jwt_parts(again.json()["access_token"])[1]["aud"] == r.audience
        assert whoami(r.upstream.url, again.json()["access_token"])["client_id"] == client_id
        other = refresh(r.idp, client_id, None, again.json()["refresh_token"], resource="http://127.0.0.1:9/mcp")
        assert other.status_code == 400 and other.json()["error"] == "invalid_target", other.text

        # The provider insists on PKCE, and on the one resource it knows, for this client too.
        with httpx2.Client(timeout=30, follow_redirects=False) as http:
            base = {"response_type": "code", "client_id": client_id, "redirect_uri": DOORMAN_CALLBACK,
                    "scope": "notes:read", "state": "s"}
            no_pkce = http.get(f"{r.idp.issuer}/auth", params=base)
            assert no_pkce.status_code in (302, 303) and "error=invalid_request" in no_pkce.headers["location"]
            wrong = http.get(f"{r.idp.issuer}/auth", params={**base, "code_challenge": "x" * 43,
                                                             "code_challenge_method": "S256",
                                                             "resource": "http://127.0.0.1:9/mcp"})
            assert wrong.status_code in (302, 303) and "error=invalid_target" in wrong.headers["location"]
        assert r.idp.count("/reg") == 1
    finally:
        r.stop()


def test_registration_is_refused_when_not_configured_and_can_be_failed(resource):
    assert "registration_endpoint" not in resource.idp.discovery()
    assert httpx2.post(f"{resource.idp.issuer}/reg", json={"redirect_uris": [CALLBACK]}, timeout=10).status_code == 404

    r = Resource(registration_skip_consent=True)
    try:
        r.idp.fail("/reg", 503)
        refused = httpx2.post(f"{r.idp.issuer}/reg", json={"redirect_uris": [DOORMAN_CALLBACK]}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"
        bad = httpx2.post(f"{r.idp.issuer}/reg", json={"token_endpoint_auth_method": "none"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_redirect_uri"
        assert r.idp.count("/reg") == 2
        assert [q.get("injected", False) for q in r.idp.registrations()] == [True, False]
        assert r.idp.registrations()[1]["error"] == "invalid_redirect_uri"
        assert r.idp.registered_clients() == []

        # registration_skip_consent: a registered client never sees the consent page ("deny" is
        # never pressed), a static one still does.
        client = register_public_client(r.idp, [DOORMAN_CALLBACK])
        tokens = obtain_tokens(r.idp, client["client_id"], None, DOORMAN_CALLBACK, "alice", "alice-pw",
                               "notes:read", decision="deny")
        assert whoami(r.upstream.url, tokens["access_token"])["client_id"] == client["client_id"]
        with pytest.raises(AssertionError, match="no code"):
            r.tokens("notes:read", decision="deny")
    finally:
        r.stop()


def test_required_scopes_are_enforced_with_403_insufficient_scope_on_every_request():
    r = Resource(self_auth=True, required_scopes="notes:write")
    try:
        metadata = f'resource_metadata="{r.audience.removesuffix("/mcp")}/.well-known/oauth-protected-resource/mcp"'
        denied = raw_initialize(r.upstream.url, None)
        assert denied.status_code == 401
        assert metadata in denied.headers["www-authenticate"]
        assert challenge_params(denied.headers["www-authenticate"])["scope"] == "notes:write"

        weak = r.tokens("notes:read")["access_token"]
        auth = {"Authorization": f"Bearer {weak}"}
        answers = [raw_initialize(r.upstream.url, weak),
                   httpx2.get(r.upstream.url, headers={**auth, "Accept": "text/event-stream"}, timeout=10),
                   httpx2.delete(r.upstream.url, headers={**auth, "Mcp-Session-Id": "x"}, timeout=10)]
        for answer in answers:
            assert answer.status_code == 403, (answer.request.method, answer.status_code, answer.text)
            challenge = answer.headers["www-authenticate"]
            params = challenge_params(challenge)
            assert params["error"] == "insufficient_scope" and params["scope"] == "notes:write", challenge
            assert metadata in challenge
            assert answer.json()["error"] == "insufficient_scope"

        strong = r.tokens("notes:read notes:write")["access_token"]
        assert raw_initialize(r.upstream.url, strong).status_code == 200
        assert sorted(whoami(r.upstream.url, strong)["scopes"]) == ["notes:read", "notes:write"]
    finally:
        r.stop()
