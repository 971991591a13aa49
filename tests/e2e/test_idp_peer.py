"""Smoke tests of the corporate IdP peer (tests/peers/idp.mjs, `oidc-provider`) that the OpenID
Connect federation tests rely on: discovery and JWKS, the code flow with PKCE through its login
and consent pages (plain HTTP and real Chromium), the claims of its ID tokens, and its
administrator controls (disable a person, rotate keys, doctored ID tokens, injected failures).
No Doorman here: these prove the peer behaves like a real provider before Doorman meets it."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlencode

import httpx2
import jwt
import pytest

from browser import CHROMIUM, LoopbackSite, run_browser
from idp import Idp, account, idp_client, idp_walk, start_idp
from oauth import forms_of, jwt_parts, pkce, query_of

SECRET = "idp-test-secret-" + secrets.token_hex(8)
ALICE = account("alice", "alice-pw", sub="00u-alice", name="Alice Example", groups=["engineering", "mcp-users"])
BOB = account("bob", "bob-pw", sub="00u-bob", email="bob@corp.example", groups=["sales"])
BASIC, POST, FIRST_PARTY = "rp-basic", "rp-post", "rp-first-party"


@pytest.fixture
def site():
    s = LoopbackSite()
    yield s
    s.stop()


@pytest.fixture
def idp(site):
    i = start_idp(
        clients=[
            idp_client(BASIC, SECRET, [site.callback_url], client_name="Doorman (basic)"),
            idp_client(POST, SECRET, [site.callback_url], auth_method="client_secret_post"),
            idp_client(FIRST_PARTY, SECRET, [site.callback_url], skip_consent=True),
        ],
        accounts=[ALICE, BOB],
    )
    yield i
    i.stop()


def authorization(idp: Idp, client_id: str, redirect_uri: str, scope: str = "openid email profile groups",
                  **extra) -> tuple[str, dict]:
    """(authorization URL, what the client keeps: verifier, state, nonce)."""
    verifier, challenge = pkce()
    keep = {"verifier": verifier, "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12)}
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
              "state": keep["state"], "nonce": keep["nonce"], "code_challenge": challenge,
              "code_challenge_method": "S256", **extra}
    return f"{idp.discovery()['authorization_endpoint']}?{urlencode(params)}", keep


def redeem(idp: Idp, client_id: str, redirect_uri: str, code: str, verifier: str, post: bool = False) -> httpx2.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    return token_request(idp, client_id, data, post)


def token_request(idp: Idp, client_id: str, data: dict, post: bool = False) -> httpx2.Response:
    if post:
        return httpx2.post(f"{idp.issuer}/token", data={**data, "client_id": client_id, "client_secret": SECRET}, timeout=30)
    basic = base64.b64encode(f"{client_id}:{SECRET}".encode()).decode()
    return httpx2.post(f"{idp.issuer}/token", data=data, headers={"Authorization": f"Basic {basic}"}, timeout=30)


def sign_in(idp: Idp, site: LoopbackSite, client_id: str = BASIC, username: str = "alice", password: str = "alice-pw",
            post: bool = False, **extra) -> tuple[dict, dict]:
    """The whole code flow with plain HTTP; returns (token response, kept values)."""
    url, keep = authorization(idp, client_id, site.callback_url, **extra)
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        back = idp_walk(http, url, idp, username, password)
    q = query_of(back)
    assert back.startswith(site.callback_url), back
    assert q["state"] == [keep["state"]] and q["iss"] == [idp.issuer], q
    r = redeem(idp, client_id, site.callback_url, q["code"][0], keep["verifier"], post=post)
    assert r.status_code == 200, r.text
    return r.json(), keep


def verify_id_token(idp: Idp, token: str, client_id: str) -> dict:
    """Full validation against the IdP's JWKS (signature, iss, aud, exp)."""
    header, _, _ = jwt_parts(token)
    keys = {k["kid"]: k for k in idp.jwks()["keys"]}
    assert header["kid"] in keys, (header, list(keys))
    key = jwt.PyJWK(keys[header["kid"]]).key
    return jwt.decode(token, key, algorithms=[header["alg"]], audience=client_id, issuer=idp.issuer)


def test_discovery_and_jwks(idp):
    d = idp.discovery()
    assert d["issuer"] == idp.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "revocation_endpoint"):
        assert d[endpoint].startswith(idp.issuer + "/"), (endpoint, d[endpoint])
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "email", "profile", "groups", "offline_access"} <= set(d["scopes_supported"])
    assert {"email", "email_verified", "name", "groups"} <= set(d["claims_supported"])
    assert {"client_secret_basic", "client_secret_post"} <= set(d["token_endpoint_auth_methods_supported"])
    assert d["response_types_supported"] == ["code"]
    assert "RS256" in d["id_token_signing_alg_values_supported"]
    assert d["authorization_response_iss_parameter_supported"] is True
    keys = idp.jwks()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES256"}
    assert len({k["kid"] for k in keys}) == len(keys)
    assert not any(private in k for k in keys for private in ("d", "p", "q", "dp", "dq", "qi")), keys


def test_code_flow_with_pkce_gives_an_id_token_with_email_and_groups(idp, site):
    tokens, keep = sign_in(idp, site, scope="openid email profile groups")
    assert tokens["token_type"].lower() == "bearer" and tokens["access_token"]
    assert "refresh_token" not in tokens  # no offline_access asked
    claims = verify_id_token(idp, tokens["id_token"], BASIC)
    assert claims["sub"] == "00u-alice" and claims["nonce"] == keep["nonce"]
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Example"
    assert claims["groups"] == ["engineering", "mcp-users"]
    assert isinstance(claims["auth_time"], int) and claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:doorman-test:pwd"

    me = httpx2.get(f"{idp.issuer}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=30)
    assert me.status_code == 200, me.text
    assert me.json()["groups"] == ["engineering", "mcp-users"] and me.json()["sub"] == "00u-alice"

    seen = [r for r in idp.requests() if r["route"] == "authorization"][0]["params"]
    assert seen["code_challenge_method"] == "S256" and seen["nonce"] == keep["nonce"]
    token_call = [r for r in idp.requests() if r["route"] == "token"][0]["params"]
    assert token_call["code"] == "***" and token_call["code_verifier"] == "***", token_call


def test_client_secret_post_and_a_first_party_client_without_consent(idp, site):
    tokens, _ = sign_in(idp, site, client_id=POST, username="bob", password="bob-pw", post=True)
    claims = verify_id_token(idp, tokens["id_token"], POST)
    assert claims["email"] == "bob@corp.example" and claims["groups"] == ["sales"]

    url, keep = authorization(idp, FIRST_PARTY, site.callback_url)
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        back = idp_walk(http, url, idp, "alice", "alice-pw", decision="never-asked")
    assert "code" in query_of(back), back
    r = redeem(idp, FIRST_PARTY, site.callback_url, query_of(back)["code"][0], keep["verifier"])
    assert r.status_code == 200 and verify_id_token(idp, r.json()["id_token"], FIRST_PARTY)["groups"]


def test_pkce_is_required_and_errors_reach_the_client(idp, site):
    url, keep = authorization(idp, BASIC, site.callback_url)
    no_pkce = url.replace("code_challenge_method=S256", "").replace("code_challenge=", "x_code_challenge=")
    r = httpx2.get(no_pkce, timeout=30, follow_redirects=False)
    q = query_of(r.headers["location"])
    assert q["error"] == ["invalid_request"] and q["state"] == [keep["state"]], q

    # A wrong password keeps the person on the login form; "deny" ends at the client with access_denied.
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        r = http.get(url)
        while r.status_code in (302, 303):
            r = http.get(httpx2.URL(url).join(r.headers["location"]))
        login_url = str(r.url)
        form = forms_of(r.text)[0]
        wrong = http.post(httpx2.URL(login_url).join(form.action), data={"username": "alice", "password": "nope"})
        assert wrong.status_code == 401 and "Incorrect username or password." in wrong.text
        back = idp_walk(http, login_url, idp, "alice", "alice-pw", decision="deny")
    assert query_of(back)["error"] == ["access_denied"], back


def test_disabling_an_account_makes_its_refresh_fail(idp, site):
    tokens, _ = sign_in(idp, site, username="bob", password="bob-pw",
                        scope="openid email groups offline_access", prompt="consent")
    assert tokens["refresh_token"]

    # Groups changed by the admin show in the tokens of the next refresh; refresh tokens rotate.
    idp.put_account({**BOB, "groups": ["sales", "mcp-users"]})
    r = token_request(idp, BASIC, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    refreshed = r.json()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert verify_id_token(idp, refreshed["id_token"], BASIC)["groups"] == ["sales", "mcp-users"]

    out = idp.disable("bob")
    assert out["disabled"] is True and out["revoked_grants"] == 1
    assert [a["disabled"] for a in idp.accounts() if a["username"] == "bob"] == [True]
    r = token_request(idp, BASIC, {"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    me = httpx2.get(f"{idp.issuer}/me", headers={"Authorization": f"Bearer {refreshed['access_token']}"}, timeout=30)
    assert me.status_code == 401, me.text

    url, _ = authorization(idp, BASIC, site.callback_url)
    with httpx2.Client(timeout=30, follow_redirects=False) as http, pytest.raises(AssertionError, match="401"):
        idp_walk(http, url, idp, "bob", "bob-pw")

    # Alice, untouched, still refreshes.
    a_tokens, _ = sign_in(idp, site, scope="openid offline_access", prompt="consent")
    r = token_request(idp, BASIC, {"grant_type": "refresh_token", "refresh_token": a_tokens["refresh_token"]})
    assert r.status_code == 200, r.text


def test_key_rotation_publishes_a_new_kid_and_keeps_sessions(idp, site):
    tokens, _ = sign_in(idp, site, scope="openid offline_access", prompt="consent")
    old_kid = jwt_parts(tokens["id_token"])[0]["kid"]

    rotated = idp.rotate_keys()
    new_rs = [k for k in rotated["kids"] if k.startswith("rs256-")][0]
    published = [k["kid"] for k in idp.jwks()["keys"]]
    assert new_rs in published and old_kid in published and new_rs != old_kid

    r = token_request(idp, BASIC, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text  # grants survive the rotation
    assert jwt_parts(r.json()["id_token"])[0]["kid"] == new_rs
    verify_id_token(idp, r.json()["id_token"], BASIC)

    idp.rotate_keys(keep_previous=False)
    published = [k["kid"] for k in idp.jwks()["keys"]]
    assert old_kid not in published and new_rs not in published and len(published) == 2


def test_doctored_id_tokens_and_injected_failures(idp, site):
    # A claim changed, still correctly signed with the published key.
    idp.next_id_token(claims={"nonce": "not-the-nonce", "aud": "someone-else"})
    tokens, keep = sign_in(idp, site)
    _, claims, _ = jwt_parts(tokens["id_token"])
    assert claims["nonce"] == "not-the-nonce" and claims["aud"] == "someone-else"
    verify_id_token(idp, tokens["id_token"], "someone-else")  # the signature is good

    # Signed by a key the JWKS never shows.
    unpublished = idp.next_id_token(key="unpublished")["unpublished_kid"]
    tokens, _ = sign_in(idp, site)
    assert jwt_parts(tokens["id_token"])[0]["kid"] == unpublished
    assert unpublished not in [k["kid"] for k in idp.jwks()["keys"]]

    # A flipped signature.
    idp.next_id_token(tamper_signature=True)
    tokens, _ = sign_in(idp, site)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_id_token(idp, tokens["id_token"], BASIC)

    # The next token request fails once with 503; the one after works again.
    url, keep = authorization(idp, BASIC, site.callback_url)
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        code = query_of(idp_walk(http, url, idp, "alice", "alice-pw"))["code"][0]
    idp.fail("/token", status=503)
    assert redeem(idp, BASIC, site.callback_url, code, keep["verifier"]).status_code == 503
    r = redeem(idp, BASIC, site.callback_url, code, keep["verifier"])
    assert r.status_code == 200, r.text
    verify_id_token(idp, r.json()["id_token"], BASIC)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium")
def test_chromium_logs_in_at_the_idp(idp, site):
    url, keep = authorization(idp, BASIC, site.callback_url, scope="openid email groups")
    report = run_browser("idp-login", [
        {"goto": url},
        {"wait_url": f"{idp.issuer}/interaction/"},
        {"screenshot": "idp-login.png"},
        {"fill": {"input[name=username]": "alice", "input[name=password]": "alice-pw"}},
        {"click": "form:has(input[name=password]) button[type=submit]"},
        {"wait_for": 'button[name="decision"][value="allow"]'},
        {"text": "h1"},
        {"screenshot": "idp-consent.png"},
        {"click": 'button[name="decision"][value="allow"]'},
        {"wait_url": site.callback_url},
    ])
    assert report["steps"][6]["text"].startswith("Allow"), report["steps"][6]
    q = query_of(report["url"])
    assert q["state"] == [keep["state"]] and q["iss"] == [idp.issuer], q
    r = redeem(idp, BASIC, site.callback_url, q["code"][0], keep["verifier"])
    assert r.status_code == 200, r.text
    claims = verify_id_token(idp, r.json()["id_token"], BASIC)
    assert claims["email"] == "alice@example.com" and claims["groups"] == ["engineering", "mcp-users"]
