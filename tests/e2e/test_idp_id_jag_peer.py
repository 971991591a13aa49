"""Smoke tests of the ID-JAG roles of the IdP peer (tests/peers/idp.mjs): the Identity Assertion
JWT Authorization Grant of MCP's Enterprise-Managed Authorization extension
(draft-ietf-oauth-identity-assertion-authz-grant) in both directions, with two idp.mjs processes
and no Doorman:

- the corporate IdP (`id_jag`): a person signs in (code flow, plain HTTP), the client exchanges
  the ID token (or an IdP refresh token) for an ID-JAG by RFC 8693 token exchange;
- a resource's authorization server (`resource_server.id_jag`): the client presents the ID-JAG
  with the RFC 7523 jwt-bearer grant and gets the resource's RFC 9068 JWT access token.

And every refusal either side owes: replayed, expired, doctored or foreign ID-JAGs at the
resource AS; bad subject tokens, unknown audiences and the administrator's policy at the IdP. The
Python SDK's IdentityAssertionOAuthProvider drives the second leg once, as an MCP client would.
These prove the peers behave before Doorman meets them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import anyio
import httpx2
import jwt
import pytest

from browser import LoopbackSite
from idp import (ID_JAG, ID_JAG_PROFILE, ID_JAG_TYP, JWT_BEARER, REFRESH_TOKEN, TOKEN_EXCHANGE, Idp, account,
                 client_auth, id_jag, id_jag_audience, idp_client, idp_walk, resource_server, start_idp,
                 trusted_issuer)
from oauth import jwt_parts, pkce, query_of
from procs import free_port

SECRET = "id-jag-secret-" + secrets.token_hex(8)
ALICE = account("alice", "alice-pw", sub="00u-alice", name="Alice Example", groups=["engineering", "mcp-users"])
BOB = account("bob", "bob-pw", sub="00u-bob", email="bob@corp.example", groups=["sales"])
# Clients at the corporate IdP, and their own client_ids at the notes authorization servers.
AGENT, AGENT_POST, STRANGER, PUBLIC = "agent", "agent-post", "stranger", "public-agent"
AGENT_THERE, SDK_THERE, OTHER_THERE = "agent-at-notes", "sdk-at-notes", "other-at-notes"
SCOPES = ["notes:read", "notes:write"]


@dataclass
class Peers:
    corp: Idp          # the corporate IdP, issuing ID-JAGs
    notes: Idp         # the notes resource's authorization server, accepting them (subject "sub")
    resource: str      # the notes resource (RFC 8707 indicator); nothing listens there
    notes2_port: int   # a second notes AS (subject "email", refresh tokens), started by one test
    callback: str


@pytest.fixture(scope="module")
def site():
    s = LoopbackSite()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def peers(site):
    # The IdP must know the resource AS's issuer and the AS the IdP's: choose the AS ports first.
    notes_port, notes2_port = free_port(), free_port()
    resource = f"http://127.0.0.1:{free_port()}/mcp"
    cb = site.callback_url
    audiences = [
        id_jag_audience(f"http://127.0.0.1:{notes_port}", {AGENT: AGENT_THERE, AGENT_POST: SDK_THERE},
                        resources=[resource], scopes=SCOPES, aliases=["urn:example:notes"]),
        id_jag_audience(f"http://127.0.0.1:{notes2_port}", {AGENT: AGENT_THERE}, resources=[resource], scopes=SCOPES),
    ]
    corp = start_idp(name="idp-corp-id-jag", accounts=[ALICE, BOB], id_jag=id_jag(audiences), clients=[
        idp_client(AGENT, SECRET, [cb], skip_consent=True),
        idp_client(AGENT_POST, SECRET, [cb], auth_method="client_secret_post", skip_consent=True),
        idp_client(STRANGER, SECRET, [cb], skip_consent=True),
        idp_client(PUBLIC, None, [cb], auth_method="none", skip_consent=True),
    ])
    try:
        notes = start_idp(
            name="idp-notes-as", port=notes_port,
            clients=[idp_client(AGENT_THERE, SECRET, [cb]),
                     idp_client(SDK_THERE, SECRET, [cb], auth_method="client_secret_post"),
                     idp_client(OTHER_THERE, SECRET, [cb])],
            accounts=[account("carol", "carol-pw", sub="notes-carol")],
            resource_server=resource_server(resource, SCOPES, id_jag_issuers=[trusted_issuer(corp)]))
    except BaseException:
        corp.stop()
        raise
    yield Peers(corp, notes, resource, notes2_port, cb)
    notes.stop()
    corp.stop()


@pytest.fixture
def env(peers):
    """The module's peers with the IdP's policy cleared and both request logs emptied."""
    peers.corp.set_id_jag_policy()
    peers.corp.reset_requests()
    peers.notes.reset_requests()
    return peers


def sign_in(p: Peers, client_id: str = AGENT, username: str = "alice", password: str = "alice-pw",
            scope: str = "openid email profile", auth: str = "basic", **extra) -> dict:
    """The code flow with PKCE at the corporate IdP over plain HTTP, the client authenticating
    with `auth` ("basic", "post", "none"); the token response."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": p.callback, "scope": scope,
              "state": state, "nonce": secrets.token_urlsafe(12), "code_challenge": challenge,
              "code_challenge_method": "S256", **extra}
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        back = idp_walk(http, f"{p.corp.issuer}/auth?{urlencode(params)}", p.corp, username, password)
    q = query_of(back)
    assert q.get("state") == [state] and "code" in q, back
    data = {"grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": p.callback,
            "code_verifier": verifier}
    form, headers = client_auth(client_id, SECRET, data, auth)
    r = httpx2.post(f"{p.corp.issuer}/token", data=form, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def alice(peers) -> dict:
    """Alice's tokens at the corporate IdP (client AGENT), with a refresh token."""
    return sign_in(peers, scope="openid email profile offline_access", prompt="consent")


@pytest.fixture(scope="module")
def bob(peers) -> dict:
    return sign_in(peers, username="bob", password="bob-pw")


def verified(issuer_idp: Idp, token: str, audience: str) -> dict:
    """The claims of a JWT after full validation against `issuer_idp`'s JWKS (signature, iss,
    aud, exp), with PyJWT."""
    header, _, _ = jwt_parts(token)
    keys = {k["kid"]: k for k in issuer_idp.jwks()["keys"]}
    assert header["kid"] in keys, (header, list(keys))
    return jwt.decode(token, jwt.PyJWK(keys[header["kid"]]).key, algorithms=[header["alg"]], audience=audience,
                      issuer=issuer_idp.issuer, options={"require": ["exp", "iat", "iss", "sub", "aud"]})


def refused(r: httpx2.Response, error: str, *words: str) -> dict:
    """Asserts an RFC 6749 §5.2 error answer whose description holds every one of `words`."""
    assert r.status_code == 400, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["error"] == error, body
    for word in words:
        assert word in body.get("error_description", ""), (word, body)
    return body


def jag_for(p: Peers, tokens: dict, **kwargs) -> str:
    kwargs.setdefault("resource", p.resource)
    return p.corp.exchange_for_id_jag(AGENT, SECRET, tokens["id_token"], p.notes.issuer, **kwargs)


def test_discovery_tells_each_role(env):
    corp = env.corp.discovery()
    assert TOKEN_EXCHANGE in corp["grant_types_supported"]
    assert corp["identity_chaining_requested_token_types_supported"] == [ID_JAG]
    r = httpx2.get(f"{env.notes.issuer}/.well-known/oauth-authorization-server", timeout=30)
    assert r.status_code == 200, r.text
    notes = r.json()
    assert notes["issuer"] == env.notes.issuer
    assert JWT_BEARER in notes["grant_types_supported"]
    assert notes["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]
    assert env.corp.issuer not in r.text  # never which issuers it trusts (draft §8.4)
    assert "authorization_grant_profiles_supported" not in corp


def test_id_token_becomes_an_id_jag_and_then_an_access_token(env, alice):
    r = env.corp.token_exchange(AGENT, SECRET, alice["id_token"], env.notes.issuer, resource=env.resource,
                                scope="notes:read")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    answer = r.json()
    assert answer["issued_token_type"] == ID_JAG and answer["token_type"] == "N_A", answer
    assert answer["expires_in"] == 300 and answer["scope"] == "notes:read" and "refresh_token" not in answer
    jag = answer["access_token"]

    header, _, _ = jwt_parts(jag)
    assert header["typ"] == ID_JAG_TYP and header["alg"] == "RS256", header
    claims = verified(env.corp, jag, env.notes.issuer)
    assert claims["iss"] == env.corp.issuer and claims["aud"] == env.notes.issuer
    assert claims["sub"] == "00u-alice" and claims["client_id"] == AGENT_THERE
    assert claims["resource"] == env.resource and claims["scope"] == "notes:read"
    assert claims["exp"] - claims["iat"] == 300 and abs(claims["iat"] - time.time()) < 30
    assert len(claims["jti"]) >= 16 and claims["email"] == "alice@example.com"
    assert claims["amr"] == ["pwd"] and claims["acr"] == "urn:doorman-test:pwd" and isinstance(claims["auth_time"], int)

    r = env.notes.jwt_bearer(AGENT_THERE, SECRET, jag)
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["token_type"] == "Bearer" and token["scope"] == "notes:read" and token["expires_in"] > 0
    assert "refresh_token" not in token  # draft §4.4.3: SHOULD NOT
    at_header, _, _ = jwt_parts(token["access_token"])
    assert at_header["typ"] == "at+jwt", at_header
    at = verified(env.notes, token["access_token"], env.resource)
    assert at["sub"] == "00u-alice" and at["client_id"] == AGENT_THERE and at["scope"] == "notes:read"

    # Both logs tell what happened, without the tokens.
    exchanged = env.corp.id_jag_requests()[-1]
    assert exchanged["status"] == 200 and exchanged["params"]["subject_token"] == "***", exchanged
    assert exchanged["params"]["grant_type"] == TOKEN_EXCHANGE and exchanged["params"]["client_id"] == AGENT
    assert exchanged["params"]["audience"] == env.notes.issuer and exchanged["params"]["resource"] == env.resource
    assert exchanged["id_jag"]["issued"] is True and exchanged["id_jag"]["claims"]["jti"] == claims["jti"]
    assert exchanged["id_jag"]["header"]["typ"] == ID_JAG_TYP
    accepted = env.notes.id_jag_requests()[-1]
    assert accepted["status"] == 200 and accepted["params"]["assertion"] == "***", accepted
    assert accepted["id_jag"] == {"accepted": True, "iss": env.corp.issuer, "sub": "00u-alice", "jti": claims["jti"],
                                  "client_id": AGENT_THERE, "account": "00u-alice", "scope": "notes:read",
                                  "refresh_token": False}
    assert jag not in env.corp.log() + env.notes.log()


def test_refresh_token_subject_alias_audience_and_scope_narrowing(env, alice):
    # No scope asked: all the audience allows. The alias names the same AS (draft §4.3).
    jag = env.corp.exchange_for_id_jag(AGENT, SECRET, alice["refresh_token"], "urn:example:notes",
                                       subject_token_type=REFRESH_TOKEN)
    claims = verified(env.corp, jag, env.notes.issuer)
    assert claims["scope"] == "notes:read notes:write" and "resource" not in claims
    assert claims["sub"] == "00u-alice"
    # The exchange does not rotate the refresh token (its refresh still works, see below).
    r = env.notes.jwt_bearer(AGENT_THERE, SECRET, jag, scope="notes:write openid", resource=env.resource)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "notes:write"
    assert verified(env.notes, r.json()["access_token"], env.resource)["scope"] == "notes:write"

    # A scope the ID-JAG lacks is invalid_scope; a resource other than the AS's is invalid_target.
    jag = jag_for(env, alice, scope="notes:read")
    refused(env.notes.jwt_bearer(AGENT_THERE, SECRET, jag, scope="notes:write"), "invalid_scope", "notes:write")
    refused(env.notes.jwt_bearer(AGENT_THERE, SECRET, jag, resource="http://127.0.0.1:1/other"), "invalid_target")
    assert env.notes.jwt_bearer(AGENT_THERE, SECRET, jag).status_code == 200  # refusals did not spend it


def test_a_replayed_id_jag_is_refused(env, alice):
    jag = jag_for(env, alice)
    assert env.notes.jwt_bearer(AGENT_THERE, SECRET, jag).status_code == 200
    refused(env.notes.jwt_bearer(AGENT_THERE, SECRET, jag), "invalid_grant", "already used")
    last = env.notes.id_jag_requests()[-1]["id_jag"]
    assert last["accepted"] is False and last["error"] == "invalid_grant" and "replay" in last["error_description"]


def test_another_client_cannot_present_the_id_jag(env, alice):
    jag = jag_for(env, alice)  # client_id agent-at-notes
    refused(env.notes.jwt_bearer(OTHER_THERE, SECRET, jag), "invalid_grant", f"client_id {AGENT_THERE}", OTHER_THERE)
    r = env.notes.jwt_bearer(AGENT_THERE, "wrong-secret", jag)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    assert env.notes.jwt_bearer(AGENT_THERE, SECRET, jag).status_code == 200


DOCTORED = {
    "expired": ({"expired": True}, "expired"),
    "wrong aud": ({"claims": {"aud": "http://127.0.0.1:1"}}, "aud"),
    "aud array of two": ({"claims": {"aud": ["AS", "OTHER"]}}, "aud"),
    "wrong client_id": ({"claims": {"client_id": OTHER_THERE}}, "is not the authenticated client"),
    "unpublished key": ({"key": "unpublished"}, "no published key has kid"),
    "tampered signature": ({"tamper_signature": True}, "signature does not verify"),
    "wrong typ": ({"header": {"typ": "JWT"}}, "typ"),
    "no typ": ({"header": {"typ": None}}, "typ"),
    "alg none": ({"header": {"alg": "none"}}, "alg"),
    "untrusted issuer": ({"claims": {"iss": "http://127.0.0.1:1"}}, "not a trusted issuer"),
    "another resource": ({"claims": {"resource": "http://127.0.0.1:1/other"}}, "resource"),
    "foreign scope": ({"claims": {"scope": "notes:read admin"}}, "admin"),
    "no jti": ({"remove": ["jti"]}, "no jti"),
    "no sub": ({"remove": ["sub"]}, "no sub"),
    "issued in the future": ({"claims": {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}}, "future"),
    "key-bound": ({"claims": {"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}}, "cnf"),
}


@pytest.mark.parametrize("case", list(DOCTORED))
def test_doctored_id_jags_are_refused(env, alice, case):
    change, words = DOCTORED[case]
    if case == "aud array of two":
        change = {"claims": {"aud": [env.notes.issuer, "http://127.0.0.1:1"]}}
    env.corp.next_id_jag(**change)
    jag = jag_for(env, alice)
    body = refused(env.notes.jwt_bearer(AGENT_THERE, SECRET, jag), "invalid_grant", words)
    entry = env.notes.id_jag_requests()[-1]
    assert entry["id_jag"]["accepted"] is False and entry["id_jag"]["error_description"] == body["error_description"]


def test_an_array_aud_of_just_this_issuer_is_fine(env, alice):
    env.corp.next_id_jag(claims={"aud": [env.notes.issuer], "resource": [env.resource, "http://127.0.0.1:1/x"]})
    r = env.notes.jwt_bearer(AGENT_THERE, SECRET, jag_for(env, alice))
    assert r.status_code == 200, r.text


def test_key_rotation_at_the_idp_is_followed(env, alice):
    assert env.notes.jwt_bearer(AGENT_THERE, SECRET, jag_for(env, alice)).status_code == 200  # JWKS cached
    new_kid = [k for k in env.corp.rotate_keys()["kids"] if k.startswith("rs256-")][0]
    jag = jag_for(env, alice)  # Alice's old ID token still verifies: the old key stays published
    assert jwt_parts(jag)[0]["kid"] == new_kid
    jwks_before = env.corp.count("/jwks")
    assert env.notes.jwt_bearer(AGENT_THERE, SECRET, jag).status_code == 200
    assert env.corp.count("/jwks") == jwks_before + 1  # fetched again for the unknown kid


def test_idp_refuses_bad_subject_tokens(env, alice, bob):
    corp, aud = env.corp, env.notes.issuer
    tampered = alice["id_token"][:-4] + ("AAAA" if not alice["id_token"].endswith("AAAA") else "BBBB")
    refused(corp.token_exchange(AGENT, SECRET, tampered, aud), "invalid_grant", "subject_token", "signature")
    refused(corp.token_exchange(AGENT, SECRET, "not-a-jwt", aud), "invalid_grant", "subject_token")
    # Bob's ID token was issued to AGENT: another client cannot use it (draft §4.3.3).
    refused(corp.token_exchange(STRANGER, SECRET, bob["id_token"], aud), "invalid_grant", "aud", STRANGER)
    # An ID-JAG or an access token is no ID token.
    jag = jag_for(env, alice)
    refused(corp.token_exchange(AGENT, SECRET, jag, aud), "invalid_grant", "typ")
    # Refresh tokens: only the client's own, unrotated.
    refused(corp.token_exchange(AGENT, SECRET, "no-such-token", aud, subject_token_type=REFRESH_TOKEN),
            "invalid_grant", "refresh token")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud,
                                subject_token_type="urn:ietf:params:oauth:token-type:access_token"),
            "invalid_request", "subject_token_type")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud, requested_token_type=None),
            "invalid_request", "requested_token_type")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud,
                                requested_token_type="urn:ietf:params:oauth:token-type:access_token"),
            "invalid_request", "requested_token_type")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], None), "invalid_request", "audience")
    r = corp.token_exchange(AGENT, "wrong-secret", alice["id_token"], aud)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    # A public client gets no ID-JAG, even for its own ID token (draft §8.1, ext-auth §7.7).
    public = sign_in(env, client_id=PUBLIC, auth="none")
    refused(corp.token_exchange(PUBLIC, None, public["id_token"], aud, auth="none"), "unauthorized_client",
            "confidential")

    # Doctored ID tokens from the IdP itself: expired, for another audience.
    corp.next_id_token(expired=True)
    expired = sign_in(env)["id_token"]
    refused(corp.token_exchange(AGENT, SECRET, expired, aud), "invalid_grant", "expired")
    corp.next_id_token(claims={"aud": STRANGER})
    foreign = sign_in(env)["id_token"]
    refused(corp.token_exchange(AGENT, SECRET, foreign, aud), "invalid_grant", "aud")

    logged = corp.id_jag_requests()
    assert logged and all(e["params"].get("subject_token") == "***" for e in logged), logged
    assert all(e["id_jag"]["issued"] is False for e in logged if e["status"] != 200)


def test_a_rotated_refresh_token_is_no_subject(env):
    tokens = sign_in(env, scope="openid offline_access", prompt="consent")
    r = httpx2.post(f"{env.corp.issuer}/token", auth=(AGENT, SECRET), timeout=30,
                    data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    refused(env.corp.token_exchange(AGENT, SECRET, tokens["refresh_token"], env.notes.issuer,
                                    subject_token_type=REFRESH_TOKEN), "invalid_grant", "already used")
    assert env.corp.exchange_for_id_jag(AGENT, SECRET, r.json()["refresh_token"], env.notes.issuer,
                                        subject_token_type=REFRESH_TOKEN)


def test_idp_refuses_unknown_audiences_resources_and_clients(env, alice, site):
    corp = env.corp
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], "http://127.0.0.1:1"), "invalid_target",
            "http://127.0.0.1:1")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], env.notes.issuer, resource="http://127.0.0.1:1/x"),
            "invalid_target", "not paired")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], [env.notes.issuer, "urn:example:notes"]),
            "invalid_request", "one audience")
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], env.notes.issuer, scope="admin"), "invalid_scope")
    # A client with no client_id at that AS may not broker access there.
    stranger = sign_in(env, client_id=STRANGER)
    refused(corp.token_exchange(STRANGER, SECRET, stranger["id_token"], env.notes.issuer), "access_denied", STRANGER)
    # Two resources paired with the audience: both in the ID-JAG (an array).
    claims = verified(corp, corp.exchange_for_id_jag(AGENT, SECRET, alice["id_token"], env.notes.issuer,
                                                     resource=[env.resource, env.resource]), env.notes.issuer)
    assert claims["resource"] == [env.resource, env.resource]


def test_the_idp_policy_refuses_and_narrows(env, alice, bob):
    corp, aud = env.corp, env.notes.issuer
    corp.set_id_jag_policy(deny_subjects=["bob"])
    refused(corp.token_exchange(AGENT, SECRET, bob["id_token"], aud), "access_denied", "bob")
    assert corp.exchange_for_id_jag(AGENT, SECRET, alice["id_token"], aud)

    corp.set_id_jag_policy(require_groups=["mcp-users"])
    refused(corp.token_exchange(AGENT, SECRET, bob["id_token"], aud), "access_denied", "mcp-users")
    corp.set_id_jag_policy(deny_audiences=["urn:example:notes"], error="invalid_target", error_description="no notes")
    assert refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud), "invalid_target") == {
        "error": "invalid_target", "error_description": "no notes"}
    corp.set_id_jag_policy(deny_clients=[AGENT])
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud), "access_denied", AGENT)

    # A person's scope ceiling: read-only for Alice.
    corp.set_id_jag_policy(scopes={"00u-alice": ["notes:read"]})
    assert corp.id_jag_policy() == {"scopes": {"00u-alice": ["notes:read"]}}
    r = corp.token_exchange(AGENT, SECRET, alice["id_token"], aud, scope="notes:read notes:write")
    assert r.status_code == 200 and r.json()["scope"] == "notes:read", r.text
    refused(corp.token_exchange(AGENT, SECRET, alice["id_token"], aud, scope="notes:write"), "invalid_scope")
    assert verified(corp, jag_for(env, alice), aud)["scope"] == "notes:read"

    corp.set_id_jag_policy()
    assert corp.exchange_for_id_jag(AGENT, SECRET, bob["id_token"], aud)
    bad = httpx2.post(f"{corp.issuer}/_control/id-jag/policy", json={"deny_subjects": "bob"}, timeout=30)
    assert bad.status_code == 400 and "deny_subjects" in bad.json()["error"], bad.text
    assert corp.id_jag_policy() == {}
    refusals = [e["id_jag"] for e in corp.id_jag_requests() if e["status"] == 400]
    assert {e["error"] for e in refusals} == {"access_denied", "invalid_target", "invalid_scope"}, refusals


def test_email_mapped_accounts_and_refresh_tokens(env, alice, bob, site):
    """A second resource AS resolving people by email and issuing refresh tokens."""
    notes2 = start_idp(
        name="idp-notes-as-2", port=env.notes2_port,
        clients=[idp_client(AGENT_THERE, SECRET, [site.callback_url])],
        accounts=[account("alice.n", "pw", sub="notes-alice", email="Alice@Example.com")],
        resource_server=resource_server(env.resource, SCOPES, id_jag_refresh_token=True,
                                        id_jag_issuers=[trusted_issuer(env.corp, subject="email",
                                                                       jwks_uri=f"{env.corp.issuer}/jwks")]))
    try:
        jag = env.corp.exchange_for_id_jag(AGENT, SECRET, alice["id_token"], notes2.issuer, scope="notes:read")
        r = notes2.jwt_bearer(AGENT_THERE, SECRET, jag)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["refresh_token"] and first["scope"] == "notes:read"
        assert verified(notes2, first["access_token"], env.resource)["sub"] == "notes-alice"
        assert notes2.id_jag_requests()[-1]["id_jag"]["account"] == "notes-alice"

        r = httpx2.post(f"{notes2.issuer}/token", auth=(AGENT_THERE, SECRET), timeout=30,
                        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
        assert r.status_code == 200, r.text
        again = verified(notes2, r.json()["access_token"], env.resource)
        assert again["sub"] == "notes-alice" and again["scope"] == "notes:read"

        # Bob has no account there with his email; an ID-JAG for the other AS is not for this one.
        jag = env.corp.exchange_for_id_jag(AGENT, SECRET, bob["id_token"], notes2.issuer)
        refused(notes2.jwt_bearer(AGENT_THERE, SECRET, jag), "invalid_grant", "bob@corp.example")
        refused(notes2.jwt_bearer(AGENT_THERE, SECRET, jag_for(env, alice)), "invalid_grant", "aud")
    finally:
        notes2.stop()


def test_python_sdk_identity_assertion_provider(env):
    """The MCP Python SDK's SEP-990 client (IdentityAssertionOAuthProvider) against the notes AS:
    metadata from its RFC 8414 document, the jwt-bearer request with client_secret_post, and the
    token on the retried request. The MCP server is a stand-in answering 401 without a valid
    token; the ID-JAG comes from a real token exchange at the corporate IdP."""
    from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
    from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

    tokens = sign_in(env, client_id=AGENT_POST, auth="post")
    notes_jwks = {k["kid"]: k for k in env.notes.jwks()["keys"]}
    asked: list[tuple[str, str]] = []
    seen_tokens: list[dict] = []

    def mcp_server(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:]
            key = jwt.PyJWK(notes_jwks[jwt_parts(token)[0]["kid"]]).key
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=env.resource, issuer=env.notes.issuer)
            seen_tokens.append(claims)
            return httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}})
        return httpx2.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    async def fetch_id_jag(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return env.corp.exchange_for_id_jag(AGENT_POST, SECRET, tokens["id_token"], audience, resource=resource,
                                            auth="post")

    class Storage:
        def __init__(self):
            self.tokens: OAuthToken | None = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return None

        async def set_client_info(self, info: OAuthClientInformationFull):
            pass

    storage = Storage()
    resource_origin = env.resource.rsplit("/", 1)[0]

    async def main():
        provider = IdentityAssertionOAuthProvider(server_url=env.resource, storage=storage, client_id=SDK_THERE,
                                                  client_secret=SECRET, issuer=env.notes.issuer,
                                                  assertion_provider=fetch_id_jag, scope="notes:read")
        mounts = {resource_origin: httpx2.MockTransport(mcp_server)}
        async with httpx2.AsyncClient(auth=provider, mounts=mounts, timeout=30) as client:
            r = await client.post(env.resource, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 200, r.text

    anyio.run(main)
    assert asked == [(env.notes.issuer, env.resource)]
    assert storage.tokens is not None and storage.tokens.scope == "notes:read"
    assert seen_tokens and seen_tokens[-1]["sub"] == "00u-alice" and seen_tokens[-1]["client_id"] == SDK_THERE
    sent = env.notes.id_jag_requests()[-1]
    assert sent["params"]["client_secret"] == "***" and sent["params"]["client_id"] == SDK_THERE, sent
    assert sent["params"]["resource"] == env.resource and sent["params"]["scope"] == "notes:read"
    assert sent["id_jag"]["accepted"] is True


def test_a_disabled_person_gets_no_id_jag(env, bob):
    """Last: it disables Bob (the module's `bob` tokens are spent after it)."""
    env.corp.disable("bob")
    try:
        refused(env.corp.token_exchange(AGENT, SECRET, bob["id_token"], env.notes.issuer), "invalid_grant", "disabled")
    finally:
        env.corp.enable("bob")
