"""The re-authorization cascade (`prompt = "reauthorize"`, and `auto` for web apps): a request
that needs a resource the person has not connected answers `401`; the client's refresh is
refused while the resource waits, so it runs its authorization at Doorman again; that
authorization takes the browser through the resource's own consent (every resource waiting for
this person and client, one after the other) before Doorman issues the code, whose tokens
continue the client's grant; the client's retry then succeeds. A refusal at the resource ends
the chain with a page that says so, and the client gets `access_denied`.

Driven here by Doorman's page walker (httpx) and real oidc-provider pages; the same run in
headless Chromium with the TypeScript SDK's own OAuth client is in test_cascade_browser.py."""

from __future__ import annotations

import secrets
import sqlite3
from urllib.parse import urlencode, urlparse

import httpx2
import pytest

from conftest import modern_headers, modern_request, rpc_json
from idp import idp_walk
from oauth import jwt_parts, pkce, query_of, www_authenticate
from test_layer2 import CLIENT_REDIRECT, IDP_ACCOUNTS, PASSWORD, Env, connection_rows, envs  # noqa: F401

pytestmark = pytest.mark.timeout(240)

SCOPES = '"openid", "email", "notes:read", "notes:write"'

# A second resource at the same authorization server, and its upstream (the same notes server).
NOTES2 = f"""
[[resources]]
name = "notes2"
display_name = "Notes Two"
issuer = "@IDP@"
client_id = "doorman-notes"
client_secret_env = "NOTES_SECRET"
scopes = [{SCOPES}]
identity = {{ id_token_claim = "email" }}
prompt = "reauthorize"
"""


def authorization_url(e: Env, challenge: str, **extra) -> str:
    return f"{e.d.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": "tester", "redirect_uri": CLIENT_REDIRECT, "scope": "mcp",
        "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_urlsafe(8),
        "resource": e.d.url, **extra})


def cascade_rows(e: Env) -> list[tuple]:
    """The cascade prompts stored: (resource, waiting, declined)."""
    db = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT resource, connection_id IS NULL, declined_at IS NOT NULL FROM connect_prompts "
                          "WHERE cascade_client IS NOT NULL ORDER BY created_at").fetchall()
    finally:
        db.close()


def exchange(e: Env, location: str, verifier: str) -> dict:
    q = query_of(location)
    assert "code" in q, location
    r = httpx2.post(f"{e.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": q["code"][0], "code_verifier": verifier,
        "redirect_uri": CLIENT_REDIRECT, "client_id": "tester", "resource": e.d.url}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def sign_in(e: Env, user: str = "alice") -> dict:
    """The tester client's first authorization (sign-in and consent pages): its token response."""
    verifier, challenge = pkce()
    loc = e.browser(user).authorize(authorization_url(e, challenge), user, PASSWORD)
    return exchange(e, loc, verifier)


def refresh(e: Env, refresh_token: str) -> httpx2.Response:
    return httpx2.post(f"{e.d.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "tester",
        "resource": e.d.url}, timeout=30)


def call(e: Env, token: str, tool: str, capabilities: dict | None = None) -> httpx2.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {}})
    if capabilities is not None:
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = capabilities
    return httpx2.post(e.d.url, json=body, timeout=60,
                       headers={**modern_headers("tools/call", tool), "Authorization": f"Bearer {token}"})


def assert_reauthorize(e: Env, r: httpx2.Response, resource: str) -> str:
    """A cascade answer: 401 with an invalid_token challenge naming Doorman's resource metadata;
    the body is the JSON-RPC error with the link. Returns the link."""
    assert r.status_code == 401, f"{r.status_code} {r.text[:300]}"
    scheme, params = www_authenticate(r.headers["www-authenticate"])
    assert scheme.lower() == "bearer" and params["error"] == "invalid_token", params
    assert params["resource_metadata"] == f"{e.d.base}/.well-known/oauth-protected-resource/mcp", params
    assert resource in params["error_description"], params
    error = r.json()["error"]
    assert error["code"] == -32011 and error["data"]["resource"] == resource, error
    assert urlparse(error["data"]["url"]).path == f"/connect/{resource}", error
    return error["data"]["url"]


def continue_link(html: str) -> str:
    """The path of a message page's "Return to your application" link."""
    return html.split('id="continue"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")


def walk(e: Env, user: str, url: str, idp_user: str = "alice-work", decision: str = "allow") -> str:
    """The browser follows `url` through Doorman's pages; each time it is sent to the resource's
    authorization server it signs in and answers there, and comes back. Returns where it finally
    leaves Doorman for the client (the redirect URI with code or error)."""
    b = e.browser(user)
    visits = 0
    while True:
        out = b.authorize(url, user, PASSWORD)
        if not out.startswith(e.idp.issuer + "/"):
            return out
        visits += 1
        assert visits <= 3, "the cascade went round in circles"
        with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
            url = idp_walk(idp_http, out, e.idp, idp_user, IDP_ACCOUNTS[idp_user][0], decision)
        assert url.startswith(f"{e.d.base}/connect/callback"), url
        if decision != "allow":
            return url


def test_reauthorize_chains_through_every_waiting_resource_and_the_retry_succeeds(envs):
    e = envs("cascade", extra='prompt = "reauthorize"\n' + NOTES2,
             more_upstreams=[{"name": "notes2", "url": "@NOTES@", "resource": "notes2"}])
    first = sign_in(e)
    token = first["access_token"]
    # Two requests, each needing a resource the person has not connected.
    link = assert_reauthorize(e, call(e, token, "notes_whoami"), "notes")
    assert "alice" not in link and token not in link
    assert_reauthorize(e, call(e, token, "notes2_whoami"), "notes2")
    # Asked again: the waiting prompt is renewed (its trip may be under way): still one trip
    # per resource, and no new link.
    r = call(e, token, "notes_whoami")
    assert r.status_code == 401 and "url" not in r.json()["error"]["data"], r.text
    assert cascade_rows(e) == [("notes", 1, 0), ("notes2", 1, 0)]

    # A silent authorization (prompt=none) cannot take the person to the resources.
    _, challenge = pkce()
    out = e.browser("alice").authorize(authorization_url(e, challenge, prompt="none"), "alice", PASSWORD)
    assert query_of(out)["error"] == ["interaction_required"], out

    # The client's refresh is refused while the resources wait (nothing is spent)...
    r = refresh(e, first["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "authorize" in r.json()["error_description"], r.text
    # ...and so it runs its authorization again: Doorman's consent is remembered, so the
    # browser goes straight on to each resource, then back to the client with a code.
    verifier, challenge = pkce()
    b = e.browser("alice")
    out = b.authorize(authorization_url(e, challenge), "alice", PASSWORD)
    assert out.startswith(e.idp.issuer + "/auth"), out
    assert query_of(out)["client_id"] == ["doorman-notes"], out
    b.pages.clear()
    with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
        back = idp_walk(idp_http, out, e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0])
    location = walk(e, "alice", back)
    assert location.startswith(CLIENT_REDIRECT + "?"), location
    # The walk went through Doorman's cascade step once more (the second resource).
    paths = [urlparse(str(p.url)).path for p in b.pages]
    assert paths.count("/connect/cascade") == 1 and paths.count("/connect/callback") == 2, paths
    assert query_of(location)["iss"] == [e.d.base], location
    second = exchange(e, location, verifier)

    # Both resources are connected, and the tokens continue the client's grant: the
    # conversation (and the connections bound to it) went on.
    rows = connection_rows(e)
    assert sorted(r[1] for r in rows) == ["notes", "notes2"], rows
    assert {r[2] for r in rows} == {"alice@work.example"} and {r[3] for r in rows} == {"session"}, rows
    assert jwt_parts(second["access_token"])[1]["sid"] == jwt_parts(token)[1]["sid"]
    assert cascade_rows(e) == [], "the cascade's prompts end with the code"
    # One refresh chain per grant: the token refused while the resources waited is dead.
    r = refresh(e, first["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    for tool in ("notes_whoami", "notes2_whoami"):
        r = call(e, second["access_token"], tool)
        assert r.status_code == 200, r.text
        result = rpc_json(r)["result"]
        assert not result.get("isError"), result
        assert "sub-alice-work" in result["content"][0]["text"], result
    # Nothing waits any more: the client refreshes as usual.
    r = refresh(e, second["refresh_token"])
    assert r.status_code == 200, r.text


def test_a_refusal_at_the_resource_says_so_and_the_client_gets_access_denied(envs):
    e = envs("cascade-refused", extra='prompt = "reauthorize"\n')
    first = sign_in(e)
    assert_reauthorize(e, call(e, first["access_token"], "notes_whoami"), "notes")
    verifier, challenge = pkce()
    out = e.browser("alice").authorize(authorization_url(e, challenge), "alice", PASSWORD)
    assert out.startswith(e.idp.issuer + "/auth"), out
    with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
        back = idp_walk(idp_http, out, e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0], decision="deny")
    page = e.browser("alice").get(back)
    assert page.status_code == 400, page.text
    assert "Notes was not connected" in page.text and "You declined at Notes" in page.text, page.text
    assert "told that access was denied" in page.text, page.text
    # The page's link ends the client's authorization with a normal OAuth error.
    href = continue_link(page.text)
    assert href.startswith("/consent?request="), href
    location = e.browser("alice").authorize(e.d.base + href, "alice", PASSWORD)
    assert location.startswith(CLIENT_REDIRECT + "?"), location
    q = query_of(location)
    assert q["error"] == ["access_denied"] and "code" not in q, location
    assert "notes" in q["error_description"][0] and q["iss"] == [e.d.base], location
    assert connection_rows(e) == []
    assert cascade_rows(e) == [], "the refusal ends the cascade"
    # The chain is over: the client may refresh again, and the next request asks again.
    assert refresh(e, first["refresh_token"]).status_code == 200
    assert_reauthorize(e, call(e, first["access_token"], "notes_whoami"), "notes")


def test_a_failure_at_the_resource_inside_the_cascade_is_no_dead_end(envs):
    e = envs("cascade-failed", extra='prompt = "reauthorize"\n')
    first = sign_in(e)
    assert_reauthorize(e, call(e, first["access_token"], "notes_whoami"), "notes")
    _, challenge = pkce()
    out = e.browser("alice").authorize(authorization_url(e, challenge), "alice", PASSWORD)
    with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
        back = idp_walk(idp_http, out, e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0])
    # The resource's code does not exchange (here: altered on the way back).
    q = query_of(back)
    page = e.browser("alice").get(back.replace(q["code"][0], q["code"][0][:-4] + "AAAA"))
    assert page.status_code == 502 and "Notes was not connected" in page.text, page.text
    assert "told that access was denied" in page.text and 'id="continue"' in page.text, page.text
    assert cascade_rows(e) == [("notes", 1, 1)]
    href = continue_link(page.text)
    location = e.browser("alice").authorize(e.d.base + href, "alice", PASSWORD)
    assert query_of(location)["error"] == ["access_denied"], location
    # Not locked out: the client refreshes, and its next request asks again.
    assert refresh(e, first["refresh_token"]).status_code == 200


def test_an_upstream_cannot_forge_the_cascade(envs):
    # An upstream answering with the cascade's error, pointing at another authorization server:
    # the client gets it as an error, never a 401 that would send it there.
    e = envs("cascade-forged", extra='prompt = "reauthorize"\n', notes_kw={"forged_errors": True})
    # The notes upstream needs a connection first: made through the cascade.
    first = sign_in(e)
    assert_reauthorize(e, call(e, first["access_token"], "notes_whoami"), "notes")
    verifier, challenge = pkce()
    location = walk(e, "alice", authorization_url(e, challenge))
    token = exchange(e, location, verifier)["access_token"]
    r = call(e, token, "notes_forged_reauthorize")
    assert r.status_code == 200 and "www-authenticate" not in r.headers, (r.status_code, dict(r.headers))
    error = rpc_json(r)["error"]
    assert error["code"] == -32011 and error["message"] == "authorize again", error


def test_the_cascade_step_belongs_to_the_browser_of_its_authorization(envs):
    e = envs("cascade-phish", extra='prompt = "reauthorize"\n')
    first = sign_in(e)
    assert_reauthorize(e, call(e, first["access_token"], "notes_whoami"), "notes")
    # Alice's authorization, stopped where Doorman sends her browser to the cascade.
    _, challenge = pkce()
    b = e.browser("alice")
    r = b.get(authorization_url(e, challenge))
    while r.status_code in (302, 303) and "/connect/cascade" not in r.headers["location"]:
        r = b.get(r.headers["location"] if r.headers["location"].startswith("http") else e.d.base + r.headers["location"])
    step = r.headers["location"]
    assert step.startswith("/connect/cascade?request="), step
    # Bob, signed in to Doorman in his own browser, opens Alice's step: refused, nothing made.
    sign_in(e, "bob")
    page = e.browser("bob").get(e.d.base + step)
    assert page.status_code == 403 and "not for you" in page.text, page.text
    # A made-up request is an expired link; Alice's own browser goes on to the resource.
    assert e.browser("alice").get(f"{e.d.base}/connect/cascade?request=nope").status_code == 400
    r = e.browser("alice").get(e.d.base + step)
    assert r.status_code == 303 and r.headers["location"].startswith(e.idp.issuer + "/auth"), r.text


def test_auto_picks_elicitation_then_the_cascade_for_web_apps_then_the_link(envs):
    # The tester client's redirect URI, named a web app.
    e = envs("cascade-auto", sign_in={"web_app_redirect_uris": [CLIENT_REDIRECT]})
    token = sign_in(e)["access_token"]
    assert_reauthorize(e, call(e, token, "notes_whoami"), "notes")
    # A client that declared URL elicitation gets it, web app or not.
    r = call(e, token, "notes_whoami", capabilities={"elicitation": {"url": {}}})
    assert r.status_code == 200, r.text
    assert rpc_json(r)["result"]["resultType"] == "input_required", r.text
    # A connection for one call cannot come back through an authorization: the link instead.
    one_call = envs("cascade-auto-call", binding="call", sign_in={"web_app_redirect_uris": [CLIENT_REDIRECT]})
    token = sign_in(one_call)["access_token"]
    r = call(one_call, token, "notes_whoami")
    assert r.status_code == 200 and "/connect/notes?prompt=" in rpc_json(r)["result"]["content"][0]["text"], r.text

    # By default (Claude's redirect URIs only), the tester client gets the link.
    plain = envs("cascade-auto-default")
    token = sign_in(plain)["access_token"]
    r = call(plain, token, "notes_whoami")
    assert r.status_code == 200, r.text
    result = rpc_json(r)["result"]
    assert result["isError"] and "/connect/notes?prompt=" in result["content"][0]["text"], result
    # ...or URL elicitation, where it declared it.
    r = call(plain, token, "notes_whoami", capabilities={"elicitation": {"url": {}}})
    assert rpc_json(r)["result"]["resultType"] == "input_required", r.text
    # And a resource set to `link` gives the link even to a web app.
    linked = envs("cascade-link", extra='prompt = "link"\n', sign_in={"web_app_redirect_uris": [CLIENT_REDIRECT]})
    token = sign_in(linked)["access_token"]
    r = call(linked, token, "notes_whoami")
    assert r.status_code == 200 and rpc_json(r)["result"]["isError"], r.text
