"""Enterprise-managed authorization towards a resource (issue 19 item 1, second direction): the
notes resource's authorization server trusts the company's IdP, so when a person who signed in to
Doorman through that IdP first needs notes, Doorman exchanges their ID token at the IdP for an
ID-JAG (RFC 8693), redeems it at the resource's authorization server (RFC 7523 jwt-bearer), and
the call goes through with a new connection: **no connect prompt**. When the IdP refuses, the
person gets the usual prompt, and the audit says why.

Real peers: two `oidc-provider` processes (tests/peers/idp.mjs), one as the corporate IdP issuing
ID-JAGs, one as the notes authorization server accepting them; the notes MCP server
(tests/peers/resource_upstream.py, the Python SDK with a JWT verifier); the person's browser
walks Doorman's and the IdP's real pages.
"""

from __future__ import annotations

import json
import sqlite3
import secrets
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx2
import pytest

from idp import account, id_jag, id_jag_audience, idp_client, resource_server, start_idp, trusted_issuer
from oauth import accounts_doorman, pkce, query_of
from procs import free_port
from resource_peers import start_resource_upstream
from test_policy_audit import call_tool, result_text, wait_rows
from test_sso import sso_walk

pytestmark = pytest.mark.timeout(300)

SECRET = "corp-" + secrets.token_hex(8)
NOTES_SECRET = "notes-" + secrets.token_hex(8)
CLIENT, REDIRECT = "id-jag-client", "http://127.0.0.1/callback"
ALICE = account("alice", "alice-pw", sub="00u-alice", email="alice@example.com", groups=["mcp-users"])
BOB = account("bob", "bob-pw", sub="00u-bob", email="bob@example.com", groups=["mcp-users"])
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def start_env(name: str, id_token_ttl: int | None = None):
    port, as_port, notes_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    as_issuer = f"http://127.0.0.1:{as_port}"
    audience = f"http://127.0.0.1:{notes_port}/mcp"
    started = []
    try:
        corp = start_idp(name=f"idp-corp-{name}", accounts=[ALICE, BOB], clients=[
            idp_client("doorman", SECRET, [f"{base}/sign-in/callback"], skip_consent=True),
        ], id_jag=id_jag([id_jag_audience(as_issuer, {"doorman": "doorman-notes"}, resources=[audience])]),
            ttl={"IdToken": id_token_ttl} if id_token_ttl else None)
        started.append(corp)
        notes_as = start_idp(name=f"idp-notes-as-{name}", port=as_port, accounts=[], clients=[
            idp_client("doorman-notes", NOTES_SECRET, [f"{base}/connect/callback"]),
        ], resource_server=resource_server(audience, id_jag_issuers=[trusted_issuer(corp)]))
        started.append(notes_as)
        notes = start_resource_upstream(notes_port, notes_as.issuer, audience, name=f"notes-{name}")
        started.append(notes)
        toml = f"""
[[sign_in.oidc]]
name = "corp"
issuer = "{corp.issuer}"
client_id = "doorman"
client_secret_env = "CORP_SECRET"
scopes = ["openid", "email", "profile", "groups", "offline_access"]
# oidc-provider grants offline_access (a refresh token) only with prompt=consent.
authorization_params = {{ prompt = "consent" }}

[[sign_in.clients]]
client_id = "{CLIENT}"
redirect_uris = ["{REDIRECT}"]

[[resources]]
name = "notes"
display_name = "Notes"
issuer = "{notes_as.issuer}"
client_id = "doorman-notes"
client_secret_env = "NOTES_SECRET"
scopes = ["notes:read", "notes:write"]
binding = "user"
[resources.id_jag]
provider = "corp"
resource = "{audience}"
"""
        d = accounts_doorman(f"doorman-{name}", [{"name": "notes", "url": audience, "resource": "notes"}],
                             port=port, sign_in={"local_accounts": False}, extra_toml=toml,
                             env={"CORP_SECRET": SECRET, "NOTES_SECRET": NOTES_SECRET})
        started.append(d)
    except BaseException:
        for p in reversed(started):
            p.stop()
        raise
    return SimpleNamespace(d=d, idp=corp, notes_as=notes_as, notes=notes, audience=audience, started=started)


def stop(e) -> None:
    for p in reversed(e.started):
        p.stop()


@pytest.fixture(scope="module")
def env():
    e = start_env("id-jag-outbound")
    yield e
    stop(e)


def sso_token(e, who: str) -> str:
    verifier, challenge = pkce()
    url = f"{e.d.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": "s", "resource": f"{e.d.base}/mcp"})
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        r = sso_walk(e, http, url, who, PASSWORDS[who])
    assert r.status_code == 303, (r.status_code, r.text[:400])
    t = httpx2.post(f"{e.d.base}/oauth/token", timeout=30, data={
        "grant_type": "authorization_code", "code": query_of(r.headers["location"])["code"][0],
        "redirect_uri": REDIRECT, "code_verifier": verifier, "client_id": CLIENT})
    assert t.status_code == 200, t.text
    return t.json()["access_token"]


def db(e, sql: str) -> list[tuple]:
    c = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def test_a_person_the_idp_vouches_for_is_connected_without_a_prompt(env):
    e = env
    alice = sso_token(e, "alice")
    result = call_tool(e.d, alice, "notes_whoami")
    assert not result.get("isError"), result
    seen = json.loads(result_text(result))
    # The resource's own token, for alice as the IdP names her, issued to Doorman's client there.
    assert seen["sub"] == "00u-alice" and seen["client_id"] == "doorman-notes" and seen["aud"] == e.audience, seen
    assert set(seen["scopes"]) == {"notes:read", "notes:write"}, seen
    assert db(e, "SELECT COUNT(*) FROM connect_prompts") == [(0,)], "nobody was asked"
    assert db(e, "SELECT resource, binding FROM connections") == [("notes", "user")]
    # The IdP exchanged alice's ID token for an ID-JAG; the notes AS accepted it.
    exchanges = [r for r in e.idp.id_jag_requests() if r.get("id_jag", {}).get("issued")]
    assert exchanges and exchanges[-1]["id_jag"]["claims"]["client_id"] == "doorman-notes", exchanges
    accepted = [r for r in e.notes_as.id_jag_requests() if r.get("id_jag", {}).get("accepted")]
    assert accepted and accepted[-1]["id_jag"]["sub"] == "00u-alice", accepted
    made = wait_rows(e.d, lambda r: r["event"] == "connection_made" and "(ID-JAG)" in (r["detail"] or ""))
    assert made, "the audit says how the connection was made"
    # The next call uses the connection: no new exchange.
    count = len(e.idp.id_jag_requests())
    assert not call_tool(e.d, alice, "notes_whoami").get("isError")
    assert len(e.idp.id_jag_requests()) == count


def test_when_the_idp_refuses_the_person_gets_the_prompt_and_the_audit_says_why(env):
    e = env
    e.idp.set_id_jag_policy(deny_subjects=["bob"])
    try:
        bob = sso_token(e, "bob")
        result = call_tool(e.d, bob, "notes_whoami")
    finally:
        e.idp.set_id_jag_policy()
    assert result.get("isError") and "/connect/notes?prompt=" in result_text(result), result
    rows = wait_rows(e.d, lambda r: r["name"] == "notes_whoami" and r["decision"] == "connection_required"
                     and "ID-JAG" in (r["detail"] or ""))
    assert rows and "gave no ID-JAG" in rows[-1]["detail"], rows
    assert db(e, "SELECT COUNT(*) FROM connect_prompts") == [(1,)]


def test_an_expired_id_token_is_refreshed_at_the_idp_before_the_exchange(py_upstream):
    # ID tokens live 30 s at this IdP: by Doorman's rule (a minute left at least) the one from
    # the sign-in is always too old, so the exchange must use a fresh one from a refresh.
    e = start_env("id-jag-refresh", id_token_ttl=30)
    try:
        alice = sso_token(e, "alice")
        refreshes = e.idp.count("/token", grant_type="refresh_token")
        result = call_tool(e.d, alice, "notes_whoami")
        assert not result.get("isError"), result
        assert json.loads(result_text(result))["sub"] == "00u-alice"
        assert e.idp.count("/token", grant_type="refresh_token") == refreshes + 1
        exchanges = [r for r in e.idp.id_jag_requests() if r.get("id_jag", {}).get("issued")]
        assert exchanges and exchanges[-1]["id_jag"]["subject_token_type"].endswith(":id_token"), exchanges
        # The rotated refresh token and the new ID token were kept (sealed), for the next time.
        [(sealed_rt, sealed_id, exp)] = db(e, "SELECT refresh_token_sealed, id_token_sealed, id_token_expires_at "
                                              "FROM federated_identities")
        assert sealed_rt and sealed_id and exp
    finally:
        stop(e)
