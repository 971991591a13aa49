"""Smoke tests of the IdP peer's on-behalf-of token exchange (tests/peers/idp.mjs, config
`exchange`; RFC 8693 delegation), with one idp.mjs process and no Doorman: a person signs in
(code flow, plain HTTP), the client exchanges the ID token for a plain access token to an internal
API, which is an RFC 9068 JWT for that API (aud), the person (sub) and the client acting for them
(act, RFC 8693 §4.1), signed with a key the IdP publishes.

And every refusal it owes: unknown audiences, clients the API does not serve, scopes it does not
grant, bad subject tokens, the administrator's policy (shared with ID-JAGs) and disabled people.
The same IdP issues ID-JAGs too (config `id_jag`): which token a request gets is checked here."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx2
import pytest

from browser import LoopbackSite
from idp import (ACCESS_TOKEN, ID_JAG, REFRESH_TOKEN, TOKEN_EXCHANGE, Idp, account, exchange, exchange_audience,
                 id_jag, id_jag_audience, idp_client, start_idp)
from oauth import jwt_parts
from procs import free_port
from test_idp_id_jag_peer import SECRET, refused, sign_in, verified

ALICE = account("alice", "alice-pw", sub="00u-alice", name="Alice Example", groups=["engineering"])
BOB = account("bob", "bob-pw", sub="00u-bob", email="bob@corp.example", groups=["sales"])
NOEMAIL = account("nomail", "nomail-pw", sub="00u-nomail")
del NOEMAIL["email"], NOEMAIL["email_verified"]
AGENT, AGENT_POST, STRANGER, PUBLIC = "agent", "agent-post", "stranger", "public-agent"
WIKI_SCOPES = ["wiki:read", "wiki:write"]


@dataclass
class Peers:
    corp: Idp       # the corporate IdP: on-behalf-of access tokens, and ID-JAGs for `notes`
    callback: str   # the clients' redirect URI (sign_in of test_idp_id_jag_peer reads these two)
    wiki: str       # an internal API: wiki:read wiki:write, for AGENT and AGENT_POST, 300 s
    hr: str         # another: hr:read, for AGENT only, 60 s
    notes: str      # a resource AS the IdP issues ID-JAGs for (nothing listens there)


@pytest.fixture(scope="module")
def site():
    s = LoopbackSite()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def peers(site):
    wiki, hr = f"http://127.0.0.1:{free_port()}/mcp", f"http://127.0.0.1:{free_port()}/api"
    notes = f"http://127.0.0.1:{free_port()}"
    cb = site.callback_url
    corp = start_idp(
        name="idp-corp-exchange", accounts=[ALICE, BOB, NOEMAIL],
        exchange=exchange([exchange_audience(wiki, WIKI_SCOPES, [AGENT, AGENT_POST]),
                           exchange_audience(hr, ["hr:read"], [AGENT], ttl=60)]),
        id_jag=id_jag([id_jag_audience(notes, {AGENT: "agent-at-notes"}, scopes=["notes:read"])]),
        clients=[idp_client(AGENT, SECRET, [cb], skip_consent=True),
                 idp_client(AGENT_POST, SECRET, [cb], auth_method="client_secret_post", skip_consent=True),
                 idp_client(STRANGER, SECRET, [cb], skip_consent=True),
                 idp_client(PUBLIC, None, [cb], auth_method="none", skip_consent=True)])
    yield Peers(corp, cb, wiki, hr, notes)
    corp.stop()


@pytest.fixture
def env(peers):
    """The module's IdP with its policy cleared and its request log emptied."""
    peers.corp.set_id_jag_policy()
    peers.corp.reset_requests()
    return peers


@pytest.fixture(scope="module")
def alice(peers) -> dict:
    """Alice's tokens at the IdP (client AGENT), with a refresh token."""
    return sign_in(peers, scope="openid email profile offline_access", prompt="consent")


@pytest.fixture(scope="module")
def bob(peers) -> dict:
    return sign_in(peers, username="bob", password="bob-pw")


def obo(p: Peers, subject_token: str, audience: str, *, client_id: str = AGENT, **kwargs) -> httpx2.Response:
    """An on-behalf-of token exchange asking for an access token; any status."""
    return p.corp.token_exchange(client_id, SECRET, subject_token, audience, requested_token_type=ACCESS_TOKEN, **kwargs)


def test_id_token_becomes_an_access_token_for_the_api(env, alice):
    r = obo(env, alice["id_token"], env.wiki)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    answer = r.json()
    assert answer["issued_token_type"] == ACCESS_TOKEN and answer["token_type"] == "Bearer", answer
    assert answer["expires_in"] == 300 and answer["scope"] == "wiki:read wiki:write", answer  # none asked: all
    assert "refresh_token" not in answer
    token = answer["access_token"]

    header, _, _ = jwt_parts(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256", header
    claims = verified(env.corp, token, env.wiki)  # PyJWT against the IdP's JWKS: signature, iss, aud, exp
    assert claims["iss"] == env.corp.issuer and claims["aud"] == env.wiki and claims["sub"] == "00u-alice"
    assert claims["client_id"] == AGENT and claims["act"] == {"sub": AGENT}
    assert claims["scope"] == "wiki:read wiki:write" and claims["email"] == "alice@example.com"
    assert claims["exp"] - claims["iat"] == 300 and abs(claims["iat"] - time.time()) < 30
    assert len(claims["jti"]) >= 16
    assert set(claims) == {"iss", "sub", "aud", "client_id", "act", "scope", "iat", "exp", "jti", "email"}
    assert header["kid"] == [k for k in env.corp.jwks()["keys"] if k["alg"] == "RS256"][0]["kid"]

    # The helper, another API with its own ttl, a second token with its own jti.
    again = env.corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.hr)
    assert again["expires_in"] == 60 and again["scope"] == "hr:read"
    hr = verified(env.corp, again["access_token"], env.hr)
    assert hr["exp"] - hr["iat"] == 60 and hr["jti"] != claims["jti"] and hr["act"] == {"sub": AGENT}

    # The log tells what happened, without the tokens; the ID-JAG log does not list these.
    logged = env.corp.exchange_requests()
    assert [e["status"] for e in logged] == [200, 200], logged
    first = logged[0]
    assert first["params"]["subject_token"] == "***" and first["params"]["grant_type"] == TOKEN_EXCHANGE
    assert first["params"]["client_id"] == AGENT and first["params"]["requested_token_type"] == ACCESS_TOKEN
    assert first["exchange"]["issued"] is True and first["exchange"]["audience"] == env.wiki
    assert first["exchange"]["claims"] == claims and first["exchange"]["header"]["typ"] == "at+jwt"
    assert env.corp.id_jag_requests() == []
    assert token not in env.corp.log()


def test_scope_client_auth_and_which_token_a_request_gets(env, alice):
    # Scopes narrowed to what the API allows.
    answer = env.corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.wiki, scope="wiki:read admin")
    assert answer["scope"] == "wiki:read"
    assert verified(env.corp, answer["access_token"], env.wiki)["scope"] == "wiki:read"

    # client_secret_post, with the client's own ID token.
    tokens = sign_in(env, client_id=AGENT_POST, auth="post")
    answer = env.corp.exchange_for_access_token(AGENT_POST, SECRET, tokens["id_token"], env.wiki, auth="post")
    claims = verified(env.corp, answer["access_token"], env.wiki)
    assert claims["client_id"] == AGENT_POST and claims["act"] == {"sub": AGENT_POST}

    # No requested_token_type (RFC 8693 §2.1): an exchange audience gets an access token; an ID-JAG
    # audience keeps the ID-JAG path, which wants it said.
    r = env.corp.token_exchange(AGENT, SECRET, alice["id_token"], env.wiki, requested_token_type=None)
    assert r.status_code == 200 and r.json()["issued_token_type"] == ACCESS_TOKEN, r.text
    refused(env.corp.token_exchange(AGENT, SECRET, alice["id_token"], env.notes, requested_token_type=None),
            "invalid_request", "requested_token_type")
    assert env.corp.exchange_for_id_jag(AGENT, SECRET, alice["id_token"], env.notes)
    # An actor_token is accepted and ignored; `resource` may repeat the audience.
    r = obo(env, alice["id_token"], env.wiki, resource=env.wiki,
            extra={"actor_token": "whatever", "actor_token_type": ACCESS_TOKEN})
    assert r.status_code == 200, r.text
    assert env.corp.requests("/token")[-1]["params"]["actor_token"] == "***"

    # A person without an email: no email claim.
    nomail = sign_in(env, username="nomail", password="nomail-pw")
    claims = verified(env.corp, env.corp.exchange_for_access_token(AGENT, SECRET, nomail["id_token"],
                                                                   env.wiki)["access_token"], env.wiki)
    assert claims["sub"] == "00u-nomail" and "email" not in claims


def test_refusals(env, alice, bob):
    corp = env.corp
    refused(obo(env, alice["id_token"], "http://127.0.0.1:1/api"), "invalid_target", "http://127.0.0.1:1/api")
    refused(obo(env, alice["id_token"], env.wiki, resource="http://127.0.0.1:1/api"), "invalid_target", "resource")
    refused(obo(env, alice["id_token"], env.notes), "invalid_request", "ID-JAG")  # an ID-JAG audience
    refused(obo(env, alice["id_token"], [env.wiki, env.hr]), "invalid_request", "one audience")
    refused(obo(env, alice["id_token"], None), "invalid_request", "audience")
    # A client the API does not serve, with its own (valid) ID token.
    stranger = sign_in(env, client_id=STRANGER)
    refused(obo(env, stranger["id_token"], env.wiki, client_id=STRANGER), "unauthorized_client", STRANGER, env.wiki)
    # Scopes the API does not grant.
    refused(obo(env, alice["id_token"], env.wiki, scope="admin hr:read"), "invalid_scope", "admin", "wiki:read")
    # Bad subject tokens: tampered, not a JWT, another client's, an access token, expired, a refresh token.
    tampered = alice["id_token"][:-4] + ("AAAA" if not alice["id_token"].endswith("AAAA") else "BBBB")
    refused(obo(env, tampered, env.wiki), "invalid_grant", "subject_token", "signature")
    refused(obo(env, "not-a-jwt", env.wiki), "invalid_grant", "subject_token")
    refused(obo(env, bob["id_token"], env.wiki, client_id=STRANGER), "invalid_grant", "aud", STRANGER)
    at = corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.wiki)["access_token"]
    refused(obo(env, at, env.wiki), "invalid_grant", "typ")
    corp.next_id_token(expired=True)
    expired = sign_in(env)["id_token"]
    refused(obo(env, expired, env.wiki), "invalid_grant", "expired")
    corp.next_id_token(key="unpublished")
    unpublished = sign_in(env)["id_token"]
    refused(obo(env, unpublished, env.wiki), "invalid_grant", "no published key")
    refused(obo(env, alice["refresh_token"], env.wiki, subject_token_type=REFRESH_TOKEN),
            "invalid_request", "subject_token_type")
    # Client authentication as usual; a public client gets nothing.
    r = corp.token_exchange(AGENT, "wrong-secret", alice["id_token"], env.wiki, requested_token_type=ACCESS_TOKEN)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    public = sign_in(env, client_id=PUBLIC, auth="none")
    refused(corp.token_exchange(PUBLIC, None, public["id_token"], env.wiki, requested_token_type=ACCESS_TOKEN,
                                auth="none"), "unauthorized_client", "confidential")

    logged = corp.exchange_requests()
    refusals = [e for e in logged if e["status"] == 400]
    assert len(refusals) == 15, logged
    assert all(e["exchange"]["issued"] is False and e["exchange"]["error_description"] for e in refusals), refusals
    assert {e["exchange"]["error"] for e in refusals} == {"invalid_target", "invalid_request", "unauthorized_client",
                                                         "invalid_grant", "invalid_scope"}
    assert all(e["params"]["subject_token"] == "***" for e in logged)
    unknown = next(e for e in refusals if e["exchange"]["error"] == "invalid_target")
    assert unknown["exchange"]["audience"] == "http://127.0.0.1:1/api" and "claims" not in unknown["exchange"]
    assert not corp.id_jag_requests()


def test_the_idp_policy_applies_to_access_tokens(env, alice, bob):
    corp = env.corp
    corp.set_id_jag_policy(deny_subjects=["bob"])
    body = refused(obo(env, bob["id_token"], env.wiki), "access_denied", "bob", "access token")
    assert corp.exchange_requests()[-1]["exchange"]["error_description"] == body["error_description"]
    assert corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.wiki)
    refused(corp.token_exchange(AGENT, SECRET, bob["id_token"], env.notes), "access_denied", "bob")  # ID-JAG too

    corp.set_id_jag_policy(deny_audiences=[env.wiki], error="invalid_target", error_description="no wiki")
    assert refused(obo(env, alice["id_token"], env.wiki), "invalid_target") == {
        "error": "invalid_target", "error_description": "no wiki"}
    assert corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.hr)
    corp.set_id_jag_policy(deny_clients=[AGENT])
    refused(obo(env, alice["id_token"], env.wiki), "access_denied", AGENT)
    corp.set_id_jag_policy(require_groups=["engineering"])
    refused(obo(env, bob["id_token"], env.wiki), "access_denied", "engineering")

    # A person's scope ceiling: read-only for Alice.
    corp.set_id_jag_policy(scopes={"alice": ["wiki:read"]})
    assert corp.exchange_for_access_token(AGENT, SECRET, alice["id_token"], env.wiki)["scope"] == "wiki:read"
    refused(obo(env, alice["id_token"], env.wiki, scope="wiki:write"), "invalid_scope", "wiki:write")

    corp.set_id_jag_policy()
    assert corp.exchange_for_access_token(AGENT, SECRET, bob["id_token"], env.wiki)["scope"] == "wiki:read wiki:write"


def test_a_disabled_person_gets_no_access_token(env, bob):
    """Last: it disables Bob (the module's `bob` tokens are spent after it)."""
    assert env.corp.exchange_for_access_token(AGENT, SECRET, bob["id_token"], env.wiki)
    env.corp.disable("bob")
    try:
        refused(obo(env, bob["id_token"], env.wiki), "invalid_grant", "disabled")
    finally:
        env.corp.enable("bob")
