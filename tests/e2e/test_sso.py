"""Signing in through the company's SSO (issue 4): `oidc-provider` (tests/peers/idp.mjs) is the
corporate IdP; Doorman is its client. A real MCP client signs in through it end to end; every
fault a provider can show (or be made to show through its test controls) is refused with a
clear page and changes nothing."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from urllib.parse import urlencode, urljoin, urlparse

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from browser import BROWSER_ARTIFACTS, CHROMIUM, LoopbackSite, run_browser
from conftest import DOORMAN_BIN
from idp import account, idp_client, idp_walk, start_idp
from oauth import accounts_doorman, add_user, advance_clock, forms_of, pkce, query_of
from procs import free_port

SECRET = "corp-oidc-secret"
CLIENT = "sso-test-client"
REDIRECT = "http://127.0.0.1/callback"
ALICE = account("alice", "alice-at-corp", sub="00u-alice", email="alice@example.com",
                name="Alice Example", groups=["engineering", "mcp-users"])
MALLORY = account("mallory", "mallory-at-corp", email="mallory@evil.example", groups=["mcp-users"])
OUTSIDER = account("olga", "olga-at-corp", email="olga@example.com", groups=["sales"])


def provider_toml(issuer: str, *, name: str = "corp", display: str = "Corp SSO", groups=("mcp-users",),
                  domains=("example.com",), recheck: str = "1h") -> str:
    return f"""
[[sign_in.oidc]]
name = "{name}"
display_name = "{display}"
issuer = "{issuer}"
client_id = "doorman"
client_secret_env = "CORP_OIDC_SECRET"
scopes = ["openid", "email", "profile", "groups", "offline_access"]
allowed_email_domains = {json.dumps(list(domains))}
allowed_groups = {json.dumps(list(groups))}
recheck_interval = "{recheck}"

[[sign_in.clients]]
client_id = "{CLIENT}"
name = "SSO test client"
redirect_uris = ["{REDIRECT}"]
"""


class Sso:
    """A Doorman and its IdP, wired to each other."""

    def __init__(self, name: str, upstreams: list[dict], local_accounts: bool = True,
                 accounts: list[dict] | None = None, conform_id_token_claims: bool = False, **provider):
        port = free_port()
        self.idp = start_idp([idp_client("doorman", SECRET, [f"http://127.0.0.1:{port}/sign-in/callback"])],
                             accounts or [ALICE, MALLORY, OUTSIDER], name=f"idp-{name}",
                             conform_id_token_claims=conform_id_token_claims)
        try:
            self.d = accounts_doorman(name, upstreams, port=port, sign_in={"local_accounts": local_accounts},
                                      extra_toml=provider_toml(self.idp.issuer, **provider),
                                      env={"CORP_OIDC_SECRET": SECRET})
        except BaseException:
            self.idp.stop()
            raise

    def stop(self):
        self.d.stop()
        self.idp.stop()


@pytest.fixture(scope="module")
def sso(py_upstream):
    s = Sso("doorman-sso", [{"name": "py", "url": py_upstream.url}])
    add_user(s.d, "localbob", "local bob's password")
    yield s
    s.stop()


def authorization_url(d, challenge: str, state: str = "st", **extra) -> str:
    return f"{d.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": state, "resource": f"{d.base}/mcp", **extra})


def sso_walk(s: Sso, http: httpx2.Client, url: str, username: str, password: str,
             idp_decision: str = "allow") -> httpx2.Response:
    """Follows an authorization URL through Doorman's sign-in page (the provider's button), the
    IdP's login and consent, back to Doorman and its consent page. Returns the first response that
    leaves Doorman's flow: a redirect to the client, or an error page."""
    d = s.d
    r = http.get(url)
    for _ in range(15):
        if r.status_code in (302, 303, 307):
            nxt = urljoin(url, r.headers["location"])
            if nxt.startswith(s.idp.issuer + "/"):
                nxt = idp_walk(http, nxt, s.idp, username, password, decision=idp_decision)
            if not nxt.startswith(d.base + "/"):
                return r if nxt == urljoin(url, r.headers["location"]) else httpx2.Response(303, headers={"location": nxt})
            url = nxt
            r = http.get(url)
            continue
        path = urlparse(url).path
        if r.status_code != 200:
            return r
        if path == "/sign-in":
            link = next(a for a in links_of(r.text) if a.startswith("/sign-in/oidc/"))
            url = urljoin(url, link)
            r = http.get(url)
        elif path == "/consent":
            form = forms_of(r.text)[0]
            url = urljoin(url, form.action)
            r = http.post(url, data={**form.fields, "decision": "allow"})
        else:
            return r
    raise AssertionError("too many steps")


def links_of(html: str) -> list[str]:
    import re
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


def sign_in(s: Sso, username: str, password: str, **extra) -> tuple[httpx2.Response, str]:
    """The whole flow for the pre-registered client; returns (final response, code verifier)."""
    verifier, challenge = pkce()
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        r = sso_walk(s, http, authorization_url(s.d, challenge, **extra), username, password)
    return r, verifier


def tokens(s: Sso, username: str, password: str, **extra) -> dict:
    r, verifier = sign_in(s, username, password, **extra)
    assert r.status_code == 303, (r.status_code, r.text[:500])
    q = query_of(r.headers["location"])
    assert "code" in q, r.headers["location"]
    t = httpx2.post(f"{s.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": CLIENT})
    assert t.status_code == 200, t.text
    return t.json()


def claims_of(jwt: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))


def people(d) -> list[dict]:
    out = subprocess.run([str(DOORMAN_BIN), "users", "list", "--json", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def refused_page(r: httpx2.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "text/html" in r.headers["content-type"]
    for w in words:
        assert w in r.text, (w, r.text[:800])


# --- the happy path, with a real MCP client ---------------------------------------------------


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, info):
        self.client_info = info


def test_a_real_mcp_client_signs_in_through_the_company_provider(sso):
    """The Python MCP SDK registers dynamically, the person signs in at the IdP, approves Doorman's
    consent page, and the client calls a tool. Doorman recorded who it was (issuer, subject,
    email, groups), and its token carries the provider's auth_time, acr and amr."""
    from mcp.client.auth import AuthorizationCodeResult

    storage = MemoryStorage()
    redirects: list[str] = []
    http_browser = httpx2.Client(timeout=30, follow_redirects=False)

    async def redirect_handler(url: str) -> None:
        r = await anyio.to_thread.run_sync(lambda: sso_walk(sso, http_browser, url, "alice", "alice-at-corp"))
        assert r.status_code == 303, (r.status_code, r.text[:300])
        redirects.append(r.headers["location"])

    async def callback_handler() -> AuthorizationCodeResult:
        q = query_of(redirects[-1])
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    metadata = OAuthClientMetadata(redirect_uris=["http://127.0.0.1:5173/callback"], client_name="SSO SDK client",
                                   token_endpoint_auth_method="none", grant_types=["authorization_code", "refresh_token"],
                                   response_types=["code"])
    provider = OAuthClientProvider(sso.d.url, metadata, storage, redirect_handler=redirect_handler,
                                   callback_handler=callback_handler)

    async def run():
        http = httpx2.AsyncClient(auth=provider, timeout=30)
        async with http, Client(streamable_http_client(sso.d.url, http_client=http)) as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            assert "py_add" in tools
            r = await c.call_tool("py_add", {"a": 2, "b": 40})
            assert not r.is_error and r.content[0].text == "42"

    try:
        anyio.run(run)
    finally:
        http_browser.close()
    assert len(redirects) == 1
    [alice] = [p for p in people(sso.d) if p["subject"] == "00u-alice"]
    assert alice["issuer"] == sso.idp.issuer
    assert alice["email"] == "alice@example.com" and alice["name"] == "Alice Example"
    assert alice["groups"] == ["engineering", "mcp-users"]
    assert alice["username"] is None, "SSO people are keyed by (issuer, subject), not a name"
    claims = claims_of(storage.tokens.access_token)
    assert claims["sub"] == alice["id"]
    assert claims["acr"] == "urn:doorman-test:pwd" and claims["amr"] == ["pwd"]
    # What Doorman sent the provider: code flow with PKCE S256, state and nonce, its callback.
    auth = [r for r in sso.idp.requests() if r["path"] == "/auth"][-1]["params"]
    assert auth["response_type"] == "code" and auth["code_challenge_method"] == "S256"
    assert auth["state"] and auth["nonce"] and auth["redirect_uri"] == f"{sso.d.base}/sign-in/callback"


def test_the_sign_in_page_offers_the_provider_and_the_local_form(sso):
    verifier, challenge = pkce()
    with httpx2.Client(timeout=30, follow_redirects=True) as http:
        page = http.get(authorization_url(sso.d, challenge))
    assert page.url.path == "/sign-in"
    assert "Sign in with Corp SSO" in page.text
    assert any("password" in f.fields for f in forms_of(page.text)), "local accounts are on here"
    # And the local account still signs in next to SSO.
    from oauth import Browser
    b = Browser(sso.d)
    try:
        back = b.authorize(authorization_url(sso.d, challenge), "localbob", "local bob's password")
    finally:
        b.close()
    assert "code" in query_of(back)


def test_a_doorman_page_opened_signed_out_signs_in_through_the_provider_and_comes_back(sso):
    """A person opens one of Doorman's pages (a connect link, /connections, /activity) in a
    browser not signed in: the sign-in page offers the provider, and after the provider's answer
    the browser lands on the page it asked for, with no client and no code involved."""
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        first = http.get(f"{sso.d.base}/activity?kind=call")
        assert first.status_code == 303 and first.headers["location"].startswith("/sign-in/browser?"), first.text
        r = sso_walk(sso, http, f"{sso.d.base}/activity?kind=call", "alice", "alice-at-corp")
        assert r.status_code == 200, r.text[:300]
        assert str(r.url) == f"{sso.d.base}/activity?kind=call", r.url
        assert "What your assistants did" in r.text, r.text[:500]


def test_groups_are_refreshed_at_every_sign_in(sso):
    tokens(sso, "alice", "alice-at-corp")
    sso.idp.put_account({**ALICE, "groups": ["mcp-users", "finance"]})
    try:
        tokens(sso, "alice", "alice-at-corp")
        [alice] = [p for p in people(sso.d) if p["subject"] == "00u-alice"]
        assert alice["groups"] == ["mcp-users", "finance"]
    finally:
        sso.idp.put_account(ALICE)


def test_step_up_asks_the_provider_for_a_fresh_login(sso):
    sso.idp.reset_requests()
    t = tokens(sso, "alice", "alice-at-corp", prompt="login")
    auth = [r for r in sso.idp.requests() if r["path"] == "/auth"][-1]["params"]
    assert auth.get("prompt") == "login consent" and auth.get("max_age") == "0"
    assert claims_of(t["access_token"])["auth_time"] > 0


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("doctor, words", [
    ({"claims": {"nonce": "not-the-nonce"}}, "nonce"),
    ({"claims": {"aud": "someone-else"}}, "aud"),
    ({"claims": {"aud": ["doorman", "other"], "azp": "other"}}, "azp"),
    ({"claims": {"iss": "https://evil.example"}}, "another provider"),
    ({"claims": {"exp": 1_000_000_000}}, "expired"),
    ({"tamper_signature": True}, "signature"),
    ({"key": "unpublished"}, "does not publish"),
    ({"header": {"alg": "none"}}, "could not be verified"),
])
def test_forged_id_tokens_are_refused(sso, doctor, words):
    """The IdP's test control doctors the next ID token; Doorman refuses it with a page naming the
    reason, creates no browser sign-in and issues no code."""
    sso.idp.next_id_token(**doctor)
    r, _ = sign_in(sso, "alice", "alice-at-corp")
    refused_page(r, 400, "could not be verified", words)


def test_a_rotated_key_is_fetched_once_and_accepted(sso):
    sso.idp.rotate_keys(keep_previous=False)
    advance_clock(sso.d, 31)  # unknown kids refetch the JWKS at most every 30 s
    t = tokens(sso, "alice", "alice-at-corp")
    assert t["access_token"]


def test_a_state_that_does_not_match_is_refused(sso):
    with httpx2.Client(timeout=30) as http:
        r = http.get(f"{sso.d.base}/sign-in/callback", params={"code": "x", "state": "forged"})
    refused_page(r, 400, "state mismatch")


@pytest.mark.parametrize("iss", ["https://attacker.example", None], ids=["another-issuer", "no-iss"])
def test_an_answer_from_another_issuer_is_refused(sso, iss):
    """RFC 9207 §2.4: the provider's answer must name the issuer the sign-in was sent to (the
    provider advertises authorization_response_iss_parameter_supported, so `iss` is required).
    The answer is stopped on its way back to Doorman and its `iss` changed."""
    from urllib.parse import parse_qsl, urlencode as enc, urlsplit, urlunsplit
    verifier, challenge = pkce()
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        r = http.get(authorization_url(sso.d, challenge))
        url = urljoin(sso.d.base, r.headers["location"])
        page = http.get(url)
        if page.status_code == 200:  # a sign-in page with the provider's button
            url = urljoin(url, next(a for a in links_of(page.text) if a.startswith("/sign-in/oidc/")))
            page = http.get(url)
        to_idp = urljoin(url, page.headers["location"])
        back = idp_walk(http, to_idp, sso.idp, "alice", "alice-at-corp")
        parts = urlsplit(back)
        assert parts.path == "/sign-in/callback" and ("iss", sso.idp.issuer) in parse_qsl(parts.query), back
        q = [(k, v) for k, v in parse_qsl(parts.query) if k != "iss"] + ([("iss", iss)] if iss else [])
        r = http.get(urlunsplit(parts._replace(query=enc(q))))
    refused_page(r, 400, "issuer does not match")


def test_claims_the_id_token_leaves_out_come_from_userinfo_and_only_verified_email_counts(py_upstream):
    """A provider at oidc-provider's defaults (conformIdTokenClaims on) puts email, name and
    groups only in its UserInfo answer: Doorman reads them there (OpenID Connect Core §5.3) and
    records the person with them. An address the provider did not verify is not recorded, so it
    cannot match `allow_people`, find a person or decide a policy."""
    verified = account("vera", "vera-at-corp", sub="00u-vera", email="vera@example.com", groups=["mcp-users"],
                       name="Vera Verified")
    unverified = account("uma", "uma-at-corp", sub="00u-uma", email="uma@example.com", email_verified=False,
                         groups=["mcp-users"], name="Uma Unverified")
    s = Sso("doorman-sso-conform", [{"name": "py", "url": py_upstream.url}], accounts=[verified, unverified],
            conform_id_token_claims=True, domains=())
    try:
        for who, password in (("vera", "vera-at-corp"), ("uma", "uma-at-corp")):
            _, challenge = pkce()
            with httpx2.Client(timeout=30, follow_redirects=False) as http:
                r = sso_walk(s, http, authorization_url(s.d, challenge), who, password)
            assert r.status_code == 303 and "code=" in r.headers["location"], (who, r.status_code, r.text[:300])
        # The ID tokens really lacked the claims: the provider was asked for UserInfo.
        assert s.idp.count("/me") >= 2, s.idp.requests()
        by_sub = {p["subject"]: p for p in people(s.d)}
        vera, uma = by_sub["00u-vera"], by_sub["00u-uma"]
        assert (vera["email"], vera["name"], vera["groups"]) == ("vera@example.com", "Vera Verified", ["mcp-users"])
        assert uma["email"] is None, "an unverified address is not recorded"
        assert (uma["name"], uma["groups"]) == ("Uma Unverified", ["mcp-users"])
    finally:
        s.stop()


def test_an_error_from_the_provider_is_shown(sso):
    verifier, challenge = pkce()
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        r = sso_walk(sso, http, authorization_url(sso.d, challenge), "alice", "alice-at-corp", idp_decision="deny")
    refused_page(r, 400, "refused the sign-in", "access_denied")


@pytest.mark.parametrize("who, words", [
    (("mallory", "mallory-at-corp"), "email domain is not allowed"),
    (("olga", "olga-at-corp"), "not in a group"),
])
def test_people_outside_the_allowed_domains_and_groups_are_refused(sso, who, words):
    r, _ = sign_in(sso, *who)
    refused_page(r, 403, words)
    assert not [p for p in people(sso.d) if p["email"] == f"{who[0]}@example.com" and who[0] == "olga"], \
        "a refused person is not recorded"


def test_a_provider_that_is_down_gives_a_clear_page(sso):
    sso.idp.fail("/token", 503)
    r, _ = sign_in(sso, "alice", "alice-at-corp")
    refused_page(r, 502, "Sign-in is not available", "Corp SSO")
    assert "sign-in through a provider failed" in sso.d.log()
    # And Doorman is fine afterwards.
    assert tokens(sso, "alice", "alice-at-corp")["access_token"]


def test_doorman_starts_and_serves_while_a_provider_is_unreachable(py_upstream):
    dead = free_port()
    d = accounts_doorman("doorman-sso-dead-idp", [{"name": "py", "url": py_upstream.url}],
                         extra_toml=provider_toml(f"http://127.0.0.1:{dead}"), env={"CORP_OIDC_SECRET": SECRET})
    try:
        add_user(d, "bob", "bob's local password")
        assert httpx2.get(f"{d.base}/healthz").status_code == 200
        verifier, challenge = pkce()
        with httpx2.Client(timeout=30, follow_redirects=True) as http:
            page = http.get(authorization_url(d, challenge))
            assert page.url.path == "/sign-in" and "Sign in with Corp SSO" in page.text
            link = next(a for a in links_of(page.text) if a.startswith("/sign-in/oidc/"))
            r = http.get(urljoin(str(page.url), link))
        refused_page(r, 502, "cannot be reached")
        # Local accounts keep working.
        from oauth import Browser
        b = Browser(d)
        try:
            assert "code" in query_of(b.authorize(authorization_url(d, challenge), "bob", "bob's local password"))
        finally:
            b.close()
    finally:
        d.stop()


def test_one_provider_and_no_local_accounts_goes_straight_to_the_provider(py_upstream):
    s = Sso("doorman-sso-only", [{"name": "py", "url": py_upstream.url}], local_accounts=False)
    try:
        verifier, challenge = pkce()
        with httpx2.Client(timeout=30, follow_redirects=False) as http:
            r = http.get(authorization_url(s.d, challenge))
            assert r.headers["location"].startswith("/sign-in?request=")
            r = http.get(urljoin(s.d.base, r.headers["location"]))
            assert r.status_code == 303 and r.headers["location"].startswith(s.idp.issuer + "/auth?"), r.text[:300]
        assert tokens(s, "alice", "alice-at-corp")["access_token"]
    finally:
        s.stop()


def test_a_person_disabled_at_the_provider_loses_doorman_at_the_next_refresh(py_upstream):
    """Deprovisioning: inside the re-check interval a refresh just works; past it Doorman asks the
    provider with its (sealed) refresh token, the provider refuses, and the grant ends."""
    s = Sso("doorman-sso-deprovision", [{"name": "py", "url": py_upstream.url}])
    try:
        t = tokens(s, "alice", "alice-at-corp")
        refresh = lambda rt: httpx2.post(f"{s.d.base}/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": rt, "client_id": CLIENT})
        r = refresh(t["refresh_token"])
        assert r.status_code == 200, r.text
        t = r.json()
        s.idp.reset_requests()
        advance_clock(s.d, 3700)  # past recheck_interval (1h)
        r = refresh(t["refresh_token"])
        assert r.status_code == 200, r.text  # still active at the provider: checked, fine
        assert any(q["path"] == "/token" for q in s.idp.requests()), "Doorman asked the provider"
        t = r.json()
        s.idp.disable("alice")
        advance_clock(s.d, 3700)
        r = refresh(t["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert "Corp" in r.json()["error_description"] or "corp" in r.json()["error_description"]
        # The access token of that grant stops working too.
        mcp = httpx2.post(s.d.url, headers={"Authorization": f"Bearer {t['access_token']}",
                                            "Accept": "application/json, text/event-stream",
                                            "Content-Type": "application/json"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert mcp.status_code == 401
    finally:
        s.stop()


# --- the same flow in real headless Chromium ----------------------------------------------------

PROVIDER_BUTTON = 'a[href^="/sign-in/oidc/corp?request="]'


@pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium")
def test_sso_sign_in_in_chromium(py_upstream):
    """A person in a real browser: the pre-registered client's authorization URL, Doorman's sign-in
    page (the provider's button next to the local form), the IdP's login and consent (Doorman asks
    for offline_access, so prompt=consent), Doorman's consent page, and back to the client's
    loopback redirect URI with code, state and iss. A screenshot of each page lands in
    tests/artifacts/browser/sso-*.png. The code is then redeemed and used on /mcp."""
    s = Sso("doorman-sso-browser", [{"name": "py", "url": py_upstream.url}])
    site = LoopbackSite()
    try:
        verifier, challenge = pkce()
        state = secrets.token_urlsafe(16)
        authorize = f"{s.d.base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": CLIENT, "redirect_uri": site.callback_url,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "resource": f"{s.d.base}/mcp"})
        s.idp.reset_requests()

        report = run_browser("sso-sign-in", [
            {"goto": authorize},                                                   # 0
            {"wait_url": f"{s.d.base}/sign-in"},                                   # 1
            {"wait_for": PROVIDER_BUTTON},                                         # 2
            {"text": PROVIDER_BUTTON},                                             # 3
            {"wait_for": "form input[name=password]"},                             # 4
            {"screenshot": "sso-doorman-sign-in.png"},                             # 5
            {"click": PROVIDER_BUTTON},                                            # 6
            {"wait_url": f"{s.idp.issuer}/interaction/"},                          # 7
            {"wait_for": "input[name=username]"},                                  # 8
            {"screenshot": "sso-idp-login.png"},                                   # 9
            {"fill": {"input[name=username]": "alice", "input[name=password]": "alice-at-corp"}},  # 10
            {"click": "form button[type=submit]"},                                 # 11
            # Doorman asks for offline_access, hence prompt=consent: the IdP's consent page.
            {"wait_for": 'button[name="decision"][value="allow"]'},                # 12
            {"screenshot": "sso-idp-consent.png"},                                 # 13
            {"click": 'button[name="decision"][value="allow"]'},                   # 14
            {"wait_url": f"{s.d.base}/consent"},                                   # 15
            {"wait_for": 'button[name="decision"][value="allow"]'},                # 16
            {"text": "main"},                                                      # 17
            {"screenshot": "sso-doorman-consent.png"},                             # 18
            {"click": 'button[name="decision"][value="allow"]'},                   # 19
            {"wait_url": site.callback_url},                                       # 20
            {"text": "#done"},                                                     # 21
        ], timeout_ms=20000)
        steps = report["steps"]

        assert steps[3]["text"].strip() == "Sign in with Corp SSO", steps[3]
        assert steps[13]["url"].startswith(f"{s.idp.issuer}/interaction/"), steps[13]
        consent_text = steps[17]["text"]
        assert "SSO test client" in consent_text, consent_text
        assert "alice@example.com" in consent_text or "Alice Example" in consent_text, consent_text
        for shot in ("sso-doorman-sign-in.png", "sso-idp-login.png", "sso-idp-consent.png", "sso-doorman-consent.png"):
            assert (BROWSER_ARTIFACTS / shot).stat().st_size > 0, shot

        # Doorman went to the provider with code + PKCE S256, state and nonce, and its own callback.
        auth = [r for r in s.idp.requests() if r["path"] == "/auth"][0]["params"]
        assert auth["response_type"] == "code" and auth["code_challenge_method"] == "S256"
        assert auth["state"] and auth["nonce"] and auth["redirect_uri"] == f"{s.d.base}/sign-in/callback"

        # Landed on the client's redirect URI with code, state and iss (RFC 9207), once.
        assert report["url"].startswith(site.callback_url), report["url"]
        assert steps[21]["text"] == "Signed in"
        assert len(site.callbacks) == 1, site.callbacks
        q = query_of(report["url"])
        assert q["state"] == [state] and q["iss"] == [s.d.base] and q["code"][0], q

        tok = httpx2.post(f"{s.d.base}/oauth/token", data={
            "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": site.callback_url,
            "code_verifier": verifier, "client_id": CLIENT}, timeout=30)
        assert tok.status_code == 200, tok.text
        access = tok.json()["access_token"]
        [alice] = [p for p in people(s.d) if p["subject"] == "00u-alice"]
        assert claims_of(access)["sub"] == alice["id"] and alice["issuer"] == s.idp.issuer
        r = httpx2.post(s.d.url, headers={"Authorization": f"Bearer {access}",
                                          "Accept": "application/json, text/event-stream",
                                          "Content-Type": "application/json"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                            "protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": {"name": "sso-browser-test", "version": "0"}}}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        site.stop()
        s.stop()
