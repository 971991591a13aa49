"""Enterprise-managed authorization with Doorman as the authorization server (issue 19 item 1,
first direction; the MCP extension and draft-ietf-oauth-identity-assertion-authz-grant): a
person signs in at the company's IdP in their client, the client exchanges the ID token for an
ID-JAG (RFC 8693 token exchange at the IdP), and presents it at Doorman's token endpoint
(`urn:ietf:params:oauth:grant-type:jwt-bearer`, RFC 7523). Doorman checks it against the
provider it federates with (`[[sign_in.oidc]] id_jag = true`) and issues an access token for the
same person a browser sign-in would find, with no browser at Doorman.

Real peers: `oidc-provider` (tests/peers/idp.mjs) as the corporate IdP issuing ID-JAGs, the MCP
Python SDK's `IdentityAssertionOAuthProvider` as the client, the Python SDK fixture upstream.
Negative cases: replayed, expired, doctored (typ, signature, key, aud, resource, cnf), another
client's, an ID token in its place, an IdP Doorman does not take ID-JAGs from, a person the
provider's rules or Doorman's administrator refuse.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from urllib.parse import urlencode

import anyio
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from conftest import DOORMAN_BIN
from idp import account, id_jag, id_jag_audience, idp_client, idp_walk, start_idp
from oauth import accounts_doorman, pkce, query_of
from procs import free_port
from test_policy_audit import mcp_post, wait_rows
from test_sso import MemoryStorage

pytestmark = pytest.mark.timeout(300)

SECRET = "id-jag-" + secrets.token_hex(8)
AGENT_SECRET = "agent-at-doorman-" + secrets.token_hex(8)
CALLBACK = "http://127.0.0.1/agent/callback"
ALICE = account("alice", "alice-pw", sub="00u-alice", email="alice@example.com", name="Alice Example",
                groups=["mcp-users"])
EVE = account("eve", "eve-pw", sub="00u-eve", email="eve@example.com", groups=["contractors"])

POLICIES = """
[[policies]]
name = "members"
tools = ["py_*"]
allow_groups = ["mcp-users"]
"""


class Env:
    def __init__(self, py_url: str):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        # At the IdP: the agent (the MCP client's IdP client) may get ID-JAGs for Doorman, where
        # it is the confidential client "agent"; "stranger" is mapped to Doorman's "other".
        audiences = [
            id_jag_audience(self.base, {"agent-app": "agent", "stranger-app": "other", "public-app": "public"},
                            resources=[f"{self.base}/mcp"], scopes=["mcp"]),
            id_jag_audience("http://127.0.0.1:1", {"agent-app": "agent"}, resources=["http://127.0.0.1:1/mcp"],
                            scopes=["mcp"]),
        ]
        self.idp = start_idp(name="idp-doorman-id-jag", accounts=[ALICE, EVE],
                             id_jag=id_jag(audiences, include_groups=True), clients=[
            idp_client("doorman", SECRET, [f"{self.base}/sign-in/callback"]),
            idp_client("agent-app", SECRET, [CALLBACK], skip_consent=True),
            idp_client("stranger-app", SECRET, [CALLBACK], skip_consent=True),
            idp_client("public-app", SECRET, [CALLBACK], skip_consent=True),
        ])
        # A second IdP Doorman federates with but takes no ID-JAGs from.
        self.other_idp = start_idp(name="idp-doorman-no-id-jag", accounts=[ALICE],
                                   id_jag=id_jag([id_jag_audience(self.base, {"agent-app": "agent"},
                                                                  resources=[f"{self.base}/mcp"], scopes=["mcp"])]),
                                   clients=[idp_client("doorman", SECRET, [f"{self.base}/sign-in/callback"]),
                                            idp_client("agent-app", SECRET, [CALLBACK], skip_consent=True)])
        toml = f"""
[[sign_in.oidc]]
name = "corp"
issuer = "{self.idp.issuer}"
client_id = "doorman"
client_secret_env = "CORP_SECRET"
scopes = ["openid", "email", "profile", "groups"]
allowed_email_domains = ["example.com"]
allowed_groups = ["mcp-users"]
# ID-JAGs carry `email` without `email_verified`: the company's IdP vouches for its addresses.
trust_email = true
id_jag = true

[[sign_in.oidc]]
name = "partner"
issuer = "{self.other_idp.issuer}"
client_id = "doorman"
client_secret_env = "CORP_SECRET"

[[sign_in.clients]]
client_id = "agent"
name = "Agent"
redirect_uris = ["{CALLBACK}"]
client_secret_env = "AGENT_SECRET"

[[sign_in.clients]]
client_id = "other"
redirect_uris = ["{CALLBACK}"]
client_secret_env = "AGENT_SECRET"

[[sign_in.clients]]
client_id = "public"
redirect_uris = ["{CALLBACK}"]
""" + POLICIES
        try:
            self.d = accounts_doorman("doorman-id-jag", [{"name": "py", "url": py_url}], port=port,
                                      extra_toml=toml, env={"CORP_SECRET": SECRET, "AGENT_SECRET": AGENT_SECRET})
        except BaseException:
            self.idp.stop()
            self.other_idp.stop()
            raise

    def stop(self):
        self.d.stop()
        self.idp.stop()
        self.other_idp.stop()


@pytest.fixture(scope="module")
def env(py_upstream):
    e = Env(py_upstream.url)
    yield e
    e.stop()


def idp_tokens(idp, username: str, password: str, client_id: str = "agent-app") -> dict:
    """The person's sign-in at the IdP in their client (code flow with PKCE); the token answer."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK,
              "scope": "openid email profile groups", "state": "s", "nonce": secrets.token_urlsafe(8),
              "code_challenge": challenge, "code_challenge_method": "S256"}
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        back = idp_walk(http, f"{idp.issuer}/auth?{urlencode(params)}", idp, username, password)
    r = httpx2.post(f"{idp.issuer}/token", auth=(client_id, SECRET), timeout=30, data={
        "grant_type": "authorization_code", "code": query_of(back)["code"][0], "redirect_uri": CALLBACK,
        "code_verifier": verifier})
    assert r.status_code == 200, r.text
    return r.json()


def jag(e: Env, tokens: dict, *, client_id: str = "agent-app", idp=None, audience: str | None = None) -> str:
    idp = idp or e.idp
    aud = audience or e.base
    return idp.exchange_for_id_jag(client_id, SECRET, tokens["id_token"], aud, resource=f"{aud}/mcp")


def redeem(e: Env, assertion: str, client: str = "agent", secret: str | None = AGENT_SECRET, **extra):
    data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion, **extra}
    auth = (client, secret) if secret is not None else None
    if secret is None:
        data["client_id"] = client
    return httpx2.post(f"{e.base}/oauth/token", data=data, auth=auth, timeout=30)


def refused(r: httpx2.Response, error: str, *words: str) -> None:
    assert r.status_code in (400, 401), r.text
    body = r.json()
    assert body["error"] == error, body
    for w in words:
        assert w in body["error_description"], (w, body)
    assert "access_token" not in body


@pytest.fixture(scope="module")
def alice(env) -> dict:
    return idp_tokens(env.idp, "alice", "alice-pw")


def test_metadata_advertises_the_jwt_bearer_grant_and_the_id_jag_profile(env):
    meta = httpx2.get(f"{env.base}/.well-known/oauth-authorization-server", timeout=10).json()
    assert "urn:ietf:params:oauth:grant-type:jwt-bearer" in meta["grant_types_supported"]
    assert meta["authorization_grant_profiles_supported"] == ["urn:ietf:params:oauth:grant-profile:id-jag"]


def test_the_python_sdk_redeems_an_id_jag_and_calls_as_the_person(env, alice):
    asked = []

    async def fetch_id_jag(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return env.idp.exchange_for_id_jag("agent-app", SECRET, alice["id_token"], audience, resource=resource)

    storage = MemoryStorage()
    seen = []

    async def on_response(r: httpx2.Response) -> None:
        seen.append((r.request.method, r.request.url.path, r.status_code))

    async def main():
        provider = IdentityAssertionOAuthProvider(server_url=env.d.url, storage=storage, client_id="agent",
                                                  client_secret=AGENT_SECRET, issuer=env.base,
                                                  assertion_provider=fetch_id_jag)
        http = httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [on_response]})
        with anyio.fail_after(120):
            async with http, Client(streamable_http_client(env.d.url, http_client=http)) as c:
                r = await c.call_tool("py_add", {"a": 1, "b": 2})
                assert (r.is_error, r.content[0].text) == (False, "3")
                who = await c.call_tool("doorman_whoami", {})
                return who.content[0].text

    whoami = anyio.run(main)
    assert asked == [(env.base, f"{env.base}/mcp")]
    assert ("POST", "/oauth/token", 200) in seen and not any(p == "/oauth/authorize" for _, p, _ in seen), seen
    assert "alice@example.com" in whoami, whoami
    assert storage.tokens.refresh_token is None, "a new ID-JAG, not a refresh token, renews access"
    # The same person as a browser sign-in through the provider would find: one row, the IdP's subject.
    people = json.loads(subprocess.run([str(DOORMAN_BIN), "users", "list", "--json", "--config", str(env.d.config)],
                                       capture_output=True, text=True, timeout=60).stdout)
    alices = [p for p in people if p.get("email") == "alice@example.com"]
    assert len(alices) == 1, people
    # Audited as a sign-in by ID-JAG, then the call under the person and the client.
    rows = wait_rows(env.d, lambda r: r["event"] == "sign_in" and "ID-JAG" in (r["detail"] or ""))
    assert rows and rows[-1]["client_id"] == "agent" and rows[-1]["person_id"] == alices[0]["id"], rows
    call = wait_rows(env.d, lambda r: r["name"] == "py_add" and r["person"] == "alice@example.com")
    assert call and call[-1]["client_id"] == "agent" and call[-1]["decision"] == "allowed", call


def test_a_redeemed_id_jag_gives_a_token_once(env, alice):
    assertion = jag(env, alice)
    first = redeem(env, assertion)
    assert first.status_code == 200, first.text
    body = first.json()
    assert "refresh_token" not in body and body["scope"] == "mcp" and first.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "agent" and claims["aud"] == f"{env.base}/mcp"
    assert mcp_post(env.d, body["access_token"], "tools/list").status_code == 200
    refused(redeem(env, assertion), "invalid_grant", "already used")


DOCTORED = {
    "expired": ({"expired": True}, "expired"),
    "wrong typ": ({"header": {"typ": "JWT"}}, "oauth-id-jag+jwt"),
    "no typ": ({"header": {"typ": None}}, "oauth-id-jag+jwt"),
    "tampered signature": ({"tamper_signature": True}, "signature"),
    "unpublished key": ({"key": "unpublished"}, "key"),
    "alg none": ({"header": {"alg": "none"}}, "not valid"),
    "wrong aud": ({"claims": {"aud": "http://127.0.0.1:1"}}, "aud"),
    "another resource": ({"claims": {"resource": "http://127.0.0.1:1/mcp"}}, "resource"),
    "key-bound": ({"claims": {"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}}, "cnf"),
    "no jti": ({"remove": ["jti"]}, "jti"),
    "no client_id": ({"remove": ["client_id"]}, "client_id"),
    "another client's": ({"claims": {"client_id": "other"}}, "another client"),
    "another issuer": ({"claims": {"iss": "http://127.0.0.1:1"}}, "not issued by an identity provider"),
}


@pytest.mark.parametrize("case", list(DOCTORED))
def test_doctored_id_jags_are_refused(env, alice, case):
    change, words = DOCTORED[case]
    env.idp.next_id_jag(**change)
    refused(redeem(env, jag(env, alice)), "invalid_grant", words)


def test_an_id_jag_is_redeemed_only_by_the_confidential_client_it_names(env, alice):
    # Another client, authenticated, presenting the agent's grant.
    refused(redeem(env, jag(env, alice), client="other"), "invalid_grant", "another client")
    # A public client proves nothing about itself.
    public = jag(env, idp_tokens(env.idp, "alice", "alice-pw", client_id="public-app"), client_id="public-app")
    refused(redeem(env, public, client="public", secret=None), "unauthorized_client", "confidential")
    # The wrong secret is a failed client authentication, before the grant is looked at.
    r = redeem(env, jag(env, alice), secret="wrong")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


def test_what_is_not_an_id_jag_for_doorman_is_refused(env, alice):
    # The person's ID token itself.
    refused(redeem(env, alice["id_token"]), "invalid_grant", "oauth-id-jag+jwt")
    # An ID-JAG for another authorization server.
    refused(redeem(env, jag(env, alice, audience="http://127.0.0.1:1")), "invalid_grant", "aud")
    # From an IdP Doorman federates with but takes no ID-JAGs from.
    partner = idp_tokens(env.other_idp, "alice", "alice-pw")
    refused(redeem(env, jag(env, partner, idp=env.other_idp)), "invalid_grant", "not issued by an identity provider")
    # Garbage, and a scope Doorman does not have.
    refused(redeem(env, "not-a-jwt"), "invalid_grant")
    refused(redeem(env, jag(env, alice), scope="mcp admin"), "invalid_scope")


def test_the_providers_rules_and_doormans_administrator_still_decide(env):
    # Eve is not in an allowed group: the IdP vouches for her, Doorman's provider rules refuse.
    eve = idp_tokens(env.idp, "eve", "eve-pw")
    refused(redeem(env, jag(env, eve)), "invalid_grant", "group")
    # A person disabled in Doorman gets nothing, whatever the IdP says.
    alice = idp_tokens(env.idp, "alice", "alice-pw")
    assert redeem(env, jag(env, alice)).status_code == 200
    alice_id = "alice@example.com"  # operators name an SSO person by email
    out = subprocess.run([str(DOORMAN_BIN), "users", "disable", alice_id, "--config", str(env.d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        refused(redeem(env, jag(env, alice)), "invalid_grant", "disabled")
    finally:
        subprocess.run([str(DOORMAN_BIN), "users", "enable", alice_id, "--config", str(env.d.config)],
                       capture_output=True, text=True, timeout=60)
    # The IdP's own policy refusing: the client gets no ID-JAG to present at all.
    env.idp.set_id_jag_policy(deny_subjects=["alice"])
    try:
        r = env.idp.token_exchange("agent-app", SECRET, alice["id_token"], env.base, resource=f"{env.base}/mcp")
        assert r.status_code == 400, r.text
    finally:
        env.idp.set_id_jag_policy()
