"""Service clients (issue 19 item 2; the MCP OAuth client credentials extension, RFC 6749 §4.4):
an agent with no person gets Doorman tokens of its own, with a client secret or, preferred,
`private_key_jwt` (RFC 7523 §2.2). It appears in policies as `clients = [...]`, in the audit as
`client:{id}`, on `/admin` as a service client; layer 2 serves it the connection an operator made
for it (`doorman connections add --client`), never a connect prompt; a tool for people refuses it
and says why.

Real peers: the Python MCP SDK's own `ClientCredentialsOAuthProvider` and
`PrivateKeyJWTOAuthProvider`, `oidc-provider` (tests/peers/idp.mjs) as the notes resource's
authorization server and its MCP server (tests/peers/resource_upstream.py), the Python SDK
fixture as an upstream.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (ClientCredentialsOAuthProvider,
                                                           PrivateKeyJWTOAuthProvider, SignedJWTParameters)
from mcp.client.streamable_http import streamable_http_client

from conftest import DOORMAN_BIN
from resource_peers import obtain_tokens
from test_console import browser_signed_in, db_rows, post_form, text_of
from test_layer2 import IDP_ACCOUNTS, NOTES_SECRET, PASSWORD
from test_sso import MemoryStorage
from test_policy_audit import (audit_cli, call_tool, list_tool_names, local_token, mcp_post, result_text,
                               start_audit_env, wait_rows)

pytestmark = pytest.mark.timeout(300)

BOT_SECRET = "ci-bot-secret-" + uuid.uuid4().hex
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

POLICIES = """
[[policies]]
name = "bots-add"
tools = ["py_add"]
clients = ["ci-bot", "ci-keyed"]

[[policies]]
name = "bots-read-notes"
tools = ["notes_whoami", "notes_read_note"]
clients = ["ci-bot"]
allow_people = ["alice"]

[[policies]]
name = "people-only"
tools = ["py_slow"]

[[sign_in.clients]]
client_id = "ci-bot"
name = "CI bot"
grant_types = ["client_credentials"]
client_secret_env = "CI_BOT_SECRET"

[[sign_in.clients]]
client_id = "ci-keyed"
name = "Keyed agent"
grant_types = ["client_credentials"]
jwks_file = "@JWKS@"

[[policies]]
name = "bots-team-ledger"
tools = ["ledger_*"]
clients = ["ci-bot"]

[[resources]]
name = "ledger"
binding = "shared"
token_header = "X-Api-Key"
shared_token_env = "LEDGER_TEAM_KEY"
"""


class Keyed:
    """The keyed agent's ES256 key pair, its public JWK Set written for `jwks_file`."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": "agent-1", "alg": "ES256", "use": "sig"})
        self.dir = Path(tempfile.mkdtemp(prefix="doorman-keyed-"))
        self.jwks = self.dir / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [public]}))
        self.pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()

    def assertion(self, audience: str, **override) -> str:
        now = int(time.time())
        claims = {"iss": "ci-keyed", "sub": "ci-keyed", "aud": audience, "iat": now, "exp": now + 120,
                  "jti": str(uuid.uuid4()), **override}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "agent-1"})


@pytest.fixture(scope="module")
def env(py_upstream):
    from test_api_key import start_service
    keyed = Keyed()
    # A service the team shares one key for (a `shared` resource): the API-key fixture.
    ledger = start_service("service-clients-ledger", "header", keys="team-key-1:team")
    try:
        e = start_audit_env("doorman-service-clients", [
            {"name": "py", "url": py_upstream.url},
            {"name": "ledger", "url": f"{ledger.base}/mcp", "resource": "ledger"},
        ], extra=POLICIES.replace("@JWKS@", str(keyed.jwks)),
            env={"CI_BOT_SECRET": BOT_SECRET, "LEDGER_TEAM_KEY": "team-key-1"})
    except BaseException:
        ledger.stop()
        raise
    e.keyed = keyed
    yield e
    e.stop()
    ledger.stop()


def token(e, **form) -> httpx2.Response:
    return httpx2.post(f"{e.d.base}/oauth/token", data={"grant_type": "client_credentials", **form}, timeout=30)


def bot_token(e) -> str:
    r = token(e, client_id="ci-bot", client_secret=BOT_SECRET)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


async def sdk_run(e, provider) -> dict:
    """One Python SDK client through its auth provider: list, call an allowed tool and one for
    people only."""
    out = {}
    seen = []

    async def on_response(r: httpx2.Response) -> None:
        seen.append((r.request.method, r.request.url.path, r.status_code))

    http = httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [on_response]})
    with anyio.fail_after(120):
        async with http, Client(streamable_http_client(e.d.url, http_client=http)) as c:
            out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
            r = await c.call_tool("py_add", {"a": 20, "b": 22})
            out["add"] = (r.is_error, r.content[0].text)
            r = await c.call_tool("py_slow", {"seconds": 0})
            out["slow"] = (r.is_error, r.content[0].text)
    out["http"] = seen
    return out


def test_the_python_sdk_client_credentials_providers_get_tokens_and_call_what_policies_allow(env):
    e = env
    meta = httpx2.get(f"{e.d.base}/.well-known/oauth-authorization-server", timeout=10).json()
    assert "client_credentials" in meta["grant_types_supported"]
    issuer = meta["issuer"]

    secret_run = anyio.run(sdk_run, e, ClientCredentialsOAuthProvider(
        server_url=e.d.url, storage=MemoryStorage(), client_id="ci-bot", client_secret=BOT_SECRET, issuer=issuer))
    keyed_run = anyio.run(sdk_run, e, PrivateKeyJWTOAuthProvider(
        server_url=e.d.url, storage=MemoryStorage(), client_id="ci-keyed", issuer=issuer,
        assertion_provider=SignedJWTParameters(issuer="ci-keyed", subject="ci-keyed", signing_key=e.keyed.pem,
                                               signing_algorithm="ES256").create_assertion_provider()))
    for run in (secret_run, keyed_run):
        # The first request got the 401 challenge, the SDK fetched a token with no browser.
        assert ("POST", "/oauth/token", 200) in run["http"], run["http"]
        assert not any(p.startswith("/oauth/authorize") for _, p, _ in run["http"]), run["http"]
        assert run["add"] == (False, "42"), run
        slow_error, slow_text = run["slow"]
        assert slow_error and "py_slow is for people" in slow_text and "people-only" in slow_text, run
    # Lists show each what it may call (tools no entry names for it are hidden; notes' tools
    # come with a connection), and of the built-in tools only whoami: connecting is not theirs.
    assert secret_run["tools"] == ["doorman_whoami", "ledger_whoami", "py_add"], secret_run["tools"]
    assert keyed_run["tools"] == ["doorman_whoami", "py_add"], keyed_run["tools"]

    # The audit names the principal, the client and the deciding policy.
    rows = wait_rows(e.d, lambda r: r["person"] == "client:ci-bot" and r["name"] in ("py_add", "py_slow"), count=2)
    by_name = {r["name"]: r for r in rows}
    assert by_name["py_add"]["decision"] == "allowed" and by_name["py_add"]["policy"] == "bots-add", by_name
    assert by_name["py_add"]["client_id"] == "ci-bot"
    assert by_name["py_slow"]["decision"] == "denied" and by_name["py_slow"]["policy"] == "people-only"
    assert [r["name"] for r in audit_cli(e.d, "--user", "client:ci-keyed") if r["name"] == "py_add"], \
        "doorman audit finds the keyed agent's calls"

    # A person is unaffected: alice may call py_slow; a person cannot get in through a bots-only entry.
    alice, _ = local_token(e, "alice")
    assert not call_tool(e.d, alice, "py_slow", {"seconds": 0}).get("isError")
    refused = call_tool(e.d, alice, "py_add", {"a": 1, "b": 2})
    assert refused.get("isError") and "bots-add" in result_text(refused), refused

    # /admin lists the principals as service clients, and /admin/audit shows their calls.
    root = browser_signed_in(e.d, "root", PASSWORD)
    admin = text_of(root.get(f"{e.d.base}/admin").text)
    assert "client:ci-bot" in admin and "service client" in admin, admin[:1500]
    page = text_of(root.get(f"{e.d.base}/admin/audit").text)
    assert "client:ci-bot" in page and "py_add" in page, page[:1500]
    root.close()


@pytest.mark.parametrize("form, status, error, words", [
    ({"client_id": "ci-bot", "client_secret": "wrong"}, 401, "invalid_client", "failed"),
    ({"client_id": "ci-bot"}, 401, "invalid_client", "secret is missing"),
    ({"client_id": "tester"}, 400, "unauthorized_client", "service clients"),
    ({"client_id": "ci-bot", "client_secret": BOT_SECRET, "scope": "mcp admin"}, 400, "invalid_scope", "mcp"),
    ({"client_id": "ci-bot", "client_secret": BOT_SECRET, "resource": "http://127.0.0.1:1/mcp"}, 400,
     "invalid_target", "only resource"),
    ({"client_id": "nobody", "client_secret": "x"}, 401, "invalid_client", "unknown"),
])
def test_the_token_endpoint_refuses_what_is_not_a_service_clients_own_request(env, form, status, error, words):
    r = token(env, **form)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and words in r.json()["error_description"], r.json()
    assert "access_token" not in r.json()


def test_a_service_client_signs_nobody_in_and_gets_no_refresh_token(env):
    e = env
    r = token(e, client_id="ci-bot", client_secret=BOT_SECRET, scope="mcp", resource=f"{e.d.base}/mcp")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and body["token_type"] == "Bearer" and body["scope"] == "mcp"
    assert r.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "ci-bot" and claims["aud"] == f"{e.d.base}/mcp"
    # Its code and refresh grants are refused: it acts as itself only.
    r = httpx2.post(f"{e.d.base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x",
                                                     "client_id": "ci-bot", "client_secret": BOT_SECRET})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
    page = httpx2.get(f"{e.d.base}/oauth/authorize", params={
        "response_type": "code", "client_id": "ci-bot", "redirect_uri": "http://127.0.0.1/cb",
        "code_challenge": "x" * 43, "code_challenge_method": "S256"})
    assert page.status_code == 400 and "service client" in text_of(page.text)


@pytest.mark.parametrize("why, make", [
    ("wrong audience", lambda k, aud: k.assertion("https://elsewhere.example/token")),
    ("expired", lambda k, aud: k.assertion(aud, exp=int(time.time()) - 300, iat=int(time.time()) - 400)),
    ("another issuer", lambda k, aud: k.assertion(aud, iss="ci-bot")),
    ("forged key", lambda k, aud: jwt.encode({"iss": "ci-keyed", "sub": "ci-keyed", "aud": aud,
                                             "exp": int(time.time()) + 60, "jti": str(uuid.uuid4())},
                                            ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                                            headers={"kid": "agent-1"})),
])
def test_private_key_jwt_refuses_forged_expired_and_misaddressed_assertions(env, why, make):
    e = env
    r = token(e, client_id="ci-keyed", client_assertion_type=ASSERTION_TYPE,
              client_assertion=make(e.keyed, e.d.base))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", (why, r.text)


def test_a_replayed_assertion_is_refused_and_a_secret_is_not_accepted_for_a_keyed_client(env):
    e = env
    assertion = e.keyed.assertion(f"{e.d.base}/oauth/token")
    first = token(e, client_id="ci-keyed", client_assertion_type=ASSERTION_TYPE, client_assertion=assertion)
    assert first.status_code == 200, first.text
    again = token(e, client_id="ci-keyed", client_assertion_type=ASSERTION_TYPE, client_assertion=assertion)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client", again.text
    r = token(e, client_id="ci-keyed", client_secret="anything")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


def test_layer_2_serves_a_service_client_only_the_connection_an_operator_made(env):
    e = env
    bot = bot_token(e)
    # No connection: a clear error, no prompt, no link.
    r = mcp_post(e.d, bot, "tools/call", {"name": "notes_whoami", "arguments": {}}, name="notes_whoami")
    body = r.json()
    assert r.status_code == 200 and "error" in body, body
    assert "doorman connections add --client ci-bot --resource notes" in body["error"]["message"], body
    assert body["error"]["data"]["reason"] == "service_client_connection_missing"
    assert not db_rows(e.d, "SELECT 1 FROM connect_prompts"), "no prompt was made for a service client"
    connect = call_tool(e.d, bot, "doorman_connect", {"resource": "notes"})
    assert connect.get("isError") and "for people" in result_text(connect), connect

    # The operator obtains tokens at the resource (as the bot's account there) and adds them.
    tokens = obtain_tokens(e.idp, "doorman-notes", NOTES_SECRET, f"{e.d.base}/connect/callback",
                           "bob-notes", IDP_ACCOUNTS["bob-notes"][0], "openid email notes:read notes:write")
    env_vars = {**os.environ, "BOT_AT": tokens["access_token"], "BOT_RT": tokens.get("refresh_token", "")}
    argv = [str(DOORMAN_BIN), "connections", "add", "--client", "ci-bot", "--resource", "notes",
            "--access-token-env", "BOT_AT", "--expires-in", str(tokens["expires_in"]), "--account", "ci@notes",
            "--config", str(e.d.config)]
    if tokens.get("refresh_token"):
        argv[argv.index("--expires-in"):argv.index("--expires-in")] = ["--refresh-token-env", "BOT_RT"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env_vars)
    assert out.returncode == 0, out.stderr
    assert "made connection" in out.stdout
    assert tokens["access_token"] not in out.stdout + out.stderr

    assert {"notes_whoami", "notes_read_note", "py_add"} <= list_tool_names(e.d, bot)
    assert "notes_write_note" not in list_tool_names(e.d, bot), "no entry names the bot for it"
    result = call_tool(e.d, bot, "notes_whoami")
    assert not result.get("isError") and "sub-bob-notes" in result_text(result), result
    row = wait_rows(e.d, lambda r: r["person"] == "client:ci-bot" and r["name"] == "notes_whoami"
                    and r["decision"] == "allowed")[-1]
    assert row["account"] == "ci@notes" and row["resource"] == "notes", row
    # Sealed at rest, listed for the principal, never shown.
    sealed = db_rows(e.d, "SELECT access_token_sealed FROM connections WHERE account = 'ci@notes'")
    assert sealed and tokens["access_token"] not in sealed[0][0]
    listed = subprocess.run([str(DOORMAN_BIN), "connections", "list", "--user", "client:ci-bot", "--json",
                             "--config", str(e.d.config)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["account"] == "ci@notes", listed
    # The keyed agent has no such connection, and no policy lets it at the notes tools anyway.
    bad = subprocess.run([str(DOORMAN_BIN), "connections", "add", "--client", "tester", "--resource", "notes",
                          "--access-token-env", "BOT_AT", "--config", str(e.d.config)],
                         capture_output=True, text=True, timeout=60, env=env_vars)
    assert bad.returncode != 0 and "client_credentials" in bad.stderr, bad.stderr


def test_an_administrator_disables_a_service_client_and_its_tokens_stop(env):
    e = env
    bot = bot_token(e)
    assert mcp_post(e.d, bot, "tools/list").status_code == 200
    principal = db_rows(e.d, "SELECT id FROM users WHERE issuer = 'client' AND subject = 'ci-bot'")[0][0]
    root = browser_signed_in(e.d, "root", PASSWORD)
    try:
        r = post_form(root, f"{e.d.base}/admin", "/admin/people", {"id": principal, "action": "disable"})
        assert r.status_code == 200 and "client:ci-bot" in text_of(r.text), text_of(r.text)[:400]
        assert mcp_post(e.d, bot, "tools/list").status_code == 401
        r = token(e, client_id="ci-bot", client_secret=BOT_SECRET)
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
        assert "disabled" in r.json()["error_description"]
        r = post_form(root, f"{e.d.base}/admin", "/admin/people", {"id": principal, "action": "enable"})
        assert r.status_code == 200
        assert mcp_post(e.d, bot_token(e), "tools/list").status_code == 200
    finally:
        root.close()


def test_a_service_client_uses_a_shared_resources_credential(env):
    e = env
    bot = bot_token(e)
    result = call_tool(e.d, bot, "ledger_whoami")
    assert not result.get("isError") and result_text(result) == "team", result
    row = wait_rows(e.d, lambda r: r["person"] == "client:ci-bot" and r["name"] == "ledger_whoami")[-1]
    assert row["account"] == "shared" and row["decision"] == "allowed", row
