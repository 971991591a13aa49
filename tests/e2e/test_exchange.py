"""Token exchange towards internal upstreams (issue 19 item 3; RFC 8693 on-behalf-of): an upstream
with `auth = "exchange"` receives, on every request, a short-lived token Doorman signs for it
alone (`aud` the upstream, `sub` the person, `act` the client, RFC 9068 format), which it checks
at Doorman's JWKS like any JWT access token. Never the client's own token.

Real peers: the upstream is tests/peers/resource_upstream.py (the MCP Python SDK server with a
JWT verifier that fetches the issuer's discovery document and JWKS: here Doorman's), the client
is raw HTTP as a signed-in person and as a service client (client credentials).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid

import httpx2
import pytest

from conftest import DOORMAN_BIN
from procs import free_port
from resource_peers import start_resource_upstream
from test_policy_audit import call_tool, local_token, mcp_post, result_text, start_audit_env

pytestmark = pytest.mark.timeout(300)

BOT_SECRET = "exchange-bot-" + uuid.uuid4().hex

EXTRA = """
[[sign_in.clients]]
client_id = "bot"
grant_types = ["client_credentials"]
client_secret_env = "BOT_SECRET"

[[policies]]
name = "internal"
tools = ["internal_*"]
clients = ["bot"]
allow_people = ["alice", "bob"]
"""


@pytest.fixture(scope="module")
def env():
    port = free_port()
    upstream_port = free_port()
    audience = f"http://127.0.0.1:{upstream_port}/mcp"
    # The upstream trusts Doorman as its token issuer and itself as the audience.
    internal = start_resource_upstream(upstream_port, f"http://127.0.0.1:{port}", audience, name="exchange-internal")
    try:
        e = start_audit_env("doorman-exchange", [{"name": "internal", "url": audience, "auth": "exchange",
                                                  "scopes": ["wiki:read", "wiki:write"]}],
                            extra=EXTRA, env={"BOT_SECRET": BOT_SECRET}, port=port)
    except BaseException:
        internal.stop()
        raise
    e.internal = internal
    e.audience = audience
    yield e
    e.stop()
    internal.stop()


def whoami(e, token: str) -> dict:
    result = call_tool(e.d, token, "internal_whoami")
    assert not result.get("isError"), result
    return json.loads(result_text(result))


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def test_the_upstream_gets_a_token_for_itself_naming_the_person_and_the_client(env):
    e = env
    alice, _ = local_token(e, "alice")
    seen = whoami(e, alice)
    people = json.loads(subprocess.run([str(DOORMAN_BIN), "users", "list", "--json", "--config", str(e.d.config)],
                                       capture_output=True, text=True, timeout=60).stdout)
    alice_id = next(p["id"] for p in people if p.get("username") == "alice")
    assert seen["sub"] == alice_id and seen["act"] == {"sub": "tester"} and seen["client_id"] == "tester", seen
    assert seen["aud"] == e.audience and seen["iss"] == e.d.base, seen
    assert seen["scopes"] == ["wiki:read", "wiki:write"] and seen["email"] == "alice@corp.example", seen
    assert seen["lifetime"] == 300, "short-lived"
    # Never the client's own token.
    assert seen["token_sha256_prefix"] != fingerprint(alice)
    # One token per person and client while it is fresh; another person gets their own.
    assert whoami(e, alice)["token_sha256_prefix"] == seen["token_sha256_prefix"]
    bob, _ = local_token(e, "bob")
    bob_seen = whoami(e, bob)
    assert bob_seen["sub"] != alice_id and bob_seen["token_sha256_prefix"] != seen["token_sha256_prefix"]


def test_the_clients_doorman_token_is_refused_at_the_upstream_and_theirs_at_doorman(env):
    e = env
    alice, _ = local_token(e, "alice")
    # Sent straight to the upstream, Doorman's access token is for Doorman (aud): refused.
    r = httpx2.post(e.audience, headers={"Authorization": f"Bearer {alice}", "Accept": "application/json, text/event-stream",
                                         "Content-Type": "application/json"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"}}}, timeout=30)
    assert r.status_code == 401, r.text


def test_a_service_client_acts_as_itself(env):
    e = env
    r = httpx2.post(f"{e.d.base}/oauth/token", data={"grant_type": "client_credentials"},
                    auth=("bot", BOT_SECRET), timeout=30)
    assert r.status_code == 200, r.text
    seen = whoami(e, r.json()["access_token"])
    assert seen["client_id"] == "bot" and seen["act"] is None and seen["email"] is None, seen
    assert mcp_post(e.d, r.json()["access_token"], "tools/list").status_code == 200


# --- Tokens from the company IdP's exchange endpoint (`exchange_provider`) ------------------------


def test_with_an_exchange_provider_the_idp_issues_the_upstreams_token(tmp_path):
    """`exchange_provider = "corp"`: the upstream's token comes from the IdP's RFC 8693 exchange,
    the person's ID token as subject, so the upstream trusts its IdP rather than Doorman."""
    from types import SimpleNamespace

    from idp import account, exchange, exchange_audience, idp_client, start_idp
    from oauth import accounts_doorman
    from test_id_jag_upstream import CLIENT, REDIRECT, sso_token

    port, upstream_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    audience = f"http://127.0.0.1:{upstream_port}/mcp"
    secret = "corp-" + uuid.uuid4().hex
    started = []
    try:
        corp = start_idp(name="idp-corp-exchange", accounts=[
            account("alice", "alice-pw", sub="00u-alice", email="alice@example.com")],
            clients=[idp_client("doorman", secret, [f"{base}/sign-in/callback"], skip_consent=True)],
            exchange=exchange([exchange_audience(audience, scopes=["wiki:read"], clients=["doorman"])]))
        started.append(corp)
        internal = start_resource_upstream(upstream_port, corp.issuer, audience, name="exchange-idp-internal")
        started.append(internal)
        d = accounts_doorman("doorman-exchange-idp", [
            {"name": "internal", "url": audience, "auth": "exchange", "exchange_provider": "corp",
             "scopes": ["wiki:read"]}], port=port, sign_in={"local_accounts": False},
            env={"CORP_SECRET": secret}, extra_toml=f"""
[[sign_in.oidc]]
name = "corp"
issuer = "{corp.issuer}"
client_id = "doorman"
client_secret_env = "CORP_SECRET"

[[sign_in.clients]]
client_id = "{CLIENT}"
redirect_uris = ["{REDIRECT}"]
""")
        started.append(d)
        e = SimpleNamespace(d=d, idp=corp)
        alice = sso_token(e, "alice")
        seen = whoami(e, alice)
        assert seen["iss"] == corp.issuer and seen["sub"] == "00u-alice" and seen["aud"] == audience, seen
        assert seen["act"] == {"sub": "doorman"} and seen["scopes"] == ["wiki:read"], seen
        assert seen["token_sha256_prefix"] != fingerprint(alice)
        exchanges = corp.count("/token", grant_type="urn:ietf:params:oauth:grant-type:token-exchange")
        assert whoami(e, alice)["token_sha256_prefix"] == seen["token_sha256_prefix"], "kept while fresh"
        assert corp.count("/token", grant_type="urn:ietf:params:oauth:grant-type:token-exchange") == exchanges
    finally:
        for p in reversed(started):
            p.stop()
