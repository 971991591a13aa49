"""Layer 2 end to end: people connect their own accounts at a resource, and the upstream tied to
that resource receives the person's resource token, never Doorman's.

Real peers only: the resource's authorization server is `oidc-provider` (tests/peers/idp.mjs in
resource-server mode: JWT access tokens, refresh tokens, RFC 7009 revocation, a request log);
the upstream is an MCP server on the Python SDK that accepts only that server's tokens and
echoes the token's subject and scopes (tests/peers/resource_upstream.py); the MCP clients are
the Python SDK's; the person's browser walks Doorman's and the resource's real pages.

Each prompt form is driven by a real client: the text form (no elicitation capability), the
`-32042` URL elicitation with `notifications/elicitation/complete` (2025-11-25), and the
`InputRequiredResult` round trip (2026-07-28).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import subprocess
import threading
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlparse

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp_types import ElicitResult

import oauth
from conftest import DOORMAN_BIN, fresh_postgres_url, modern_headers, modern_request, store_snapshot
from idp import account, idp_client, idp_walk, resource_server, start_idp
from oauth import Browser, add_user, advance_clock, forms_of, pkce, query_of
from procs import free_port
from resource_peers import start_resource_upstream

pytestmark = pytest.mark.timeout(240)

PASSWORD = "correct horse battery staple"
JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
NOTES_SECRET = "notes-client-secret-for-tests-only"
CLIENT_REDIRECT = "http://127.0.0.1:9/cb"
IDP_ACCOUNTS = {
    "alice-work": ("pw-alice-work", "alice@work.example"),
    "alice-test": ("pw-alice-test", "alice-test@work.example"),
    "bob-notes": ("pw-bob", "bob@work.example"),
}


@dataclass(eq=False)
class Env:
    d: oauth.Doorman
    idp: object
    notes: object
    browsers: dict = field(default_factory=dict)

    def browser(self, user: str) -> Browser:
        if user not in self.browsers:
            self.browsers[user] = Browser(self.d)
        return self.browsers[user]

    def stop(self):
        for b in self.browsers.values():
            b.close()
        self.d.stop()
        self.notes.stop()
        self.idp.stop()


def start_env(name: str, *, binding: str = "session", max_age: str | None = None, access_ttl: int = 3600,
              extra: str = "", database_url: str | None = None, port: int | None = None, idp=None,
              notes=None, shared: str | None = None, env: dict | None = None,
              required_scopes: str = "", scopes: str = '"openid", "email", "notes:read", "notes:write"',
              server: dict | None = None, notes_kw: dict | None = None, upstream_kw: dict | None = None,
              more_upstreams: list[dict] | None = None, sign_in: dict | None = None) -> Env:
    """`extra` is appended to the notes resource's table (`@IDP@` stands for the IdP's issuer);
    `more_upstreams` are added beside notes (`@NOTES@` in a url: the notes upstream's)."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    notes_port = free_port()
    audience = f"http://127.0.0.1:{notes_port}/mcp"
    if idp is None:
        idp = start_idp(
            clients=[idp_client("doorman-notes", NOTES_SECRET, [f"{base}/connect/callback"])],
            accounts=[account(u, pw, email=email) for u, (pw, email) in IDP_ACCOUNTS.items()],
            resource_server=resource_server(audience, access_token_ttl=access_ttl, always_refresh=True),
            name=f"{name}-idp")
    if notes is None:
        notes = start_resource_upstream(notes_port, idp.issuer, audience, name=f"{name}-notes",
                                        required_scopes=required_scopes, **(notes_kw or {}))
    if shared is not None:
        resource = """
[[resources]]
name = "notes"
display_name = "Notes"
binding = "shared"
shared_token_env = "NOTES_SHARED"
"""
    else:
        resource = f"""
[[resources]]
name = "notes"
display_name = "Notes"
issuer = "{idp.issuer}"
client_id = "doorman-notes"
client_secret_env = "NOTES_SECRET"
scopes = [{scopes}]
identity = {{ id_token_claim = "email" }}
binding = "{binding}"
"""
    if max_age:
        resource += f'max_age = "{max_age}"\n'
    resource += extra.replace("@IDP@", idp.issuer)
    resource += f"""
[[sign_in.clients]]
client_id = "tester"
name = "Tester"
redirect_uris = ["{CLIENT_REDIRECT}"]
"""
    server = {"session_idle_timeout": "1d", **(server or {})}
    if database_url:
        server["database_url"] = database_url
    upstreams = [{"name": "notes", "url": notes.url, "resource": "notes", **(upstream_kw or {})}]
    upstreams += [{**u, "url": u["url"].replace("@NOTES@", notes.url)} for u in (more_upstreams or [])]
    d = oauth.accounts_doorman(name, upstreams, sign_in=sign_in,
                               extra_toml=resource,
                               env={"NOTES_SECRET": NOTES_SECRET, "NOTES_SHARED": shared or "", **(env or {})},
                               port=port,
                               server=server)
    e = Env(d, idp, notes)
    return e


@pytest.fixture
def envs():
    started: list[Env] = []

    def start(name: str, **kw) -> Env:
        e = start_env(name, **kw)
        started.append(e)
        for user in ("alice", "bob"):
            try:
                add_user(e.d, user, PASSWORD, email=f"{user}@corp.example")
            except AssertionError:
                pass  # a second Doorman on the same database
        return e

    yield start
    for e in started:
        e.stop()


def doorman_token(e: Env, user: str) -> str:
    """Signs `user` in at Doorman through the real pages (their browser keeps the cookie)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    q = {"response_type": "code", "client_id": "tester", "redirect_uri": CLIENT_REDIRECT, "scope": "mcp",
         "code_challenge": challenge, "code_challenge_method": "S256", "state": state, "resource": e.d.url}
    loc = e.browser(user).authorize(f"{e.d.base}/oauth/authorize?{urlencode(q)}", user, PASSWORD)
    code = query_of(loc)["code"][0]
    r = httpx2.post(f"{e.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": CLIENT_REDIRECT, "client_id": "tester", "resource": e.d.url}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def follow_connect(e: Env, user: str, link: str, idp_user: str = "alice-work", decision: str = "allow",
                   fresh_idp_session: bool = True) -> httpx2.Response:
    """The person opens the connect link in their (signed-in) browser, authorizes at the
    resource, and comes back; returns Doorman's final page."""
    b = e.browser(user)
    r = b.get(link)
    assert r.status_code == 303, f"{r.status_code} {r.text[:300]}"
    to_resource = r.headers["location"]
    assert to_resource.startswith(e.idp.issuer + "/auth"), to_resource
    pw = IDP_ACCOUNTS[idp_user][0]
    with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
        back = idp_walk(idp_http if fresh_idp_session else b.http, to_resource, e.idp, idp_user, pw, decision)
    # Doorman's public URL: the node's own, or a load balancer's in front of several (`e.public`).
    assert back.startswith(f"{getattr(e, 'public', e.d.base)}/connect/callback"), back
    return b.get(back)


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def link_in(text: str) -> str:
    link = next(w for w in text.split() if "/connect/" in w)
    return link.rstrip(".")


def client(e: Env, token: str, mode: str = "legacy", **kw) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120))
    return http, Client(streamable_http_client(e.d.url, http_client=http), mode=mode, **kw)


def sha12(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


async def whoami_of(c: Client) -> dict:
    r = await c.call_tool("notes_whoami", {})
    assert not r.is_error, text_of(r)
    return json.loads(text_of(r))


async def doorman_whoami(c: Client) -> dict:
    r = await c.call_tool("doorman_whoami", {})
    assert not r.is_error, text_of(r)
    return r.structured_content


def notes_status(who: dict) -> dict:
    return next(r for r in who["resources"] if r["resource"] == "notes")


# ---------------------------------------------------------------------------------------------
# The three prompt forms with real clients


def test_text_prompt_then_the_upstream_gets_the_persons_resource_token(envs):
    e = envs("l2-text")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert {"doorman_whoami", "doorman_connect", "doorman_disconnect", "doorman_use_account"} <= tools
            first = await c.call_tool("notes_whoami", {})
            assert first.is_error
            text = text_of(first)
            assert text.startswith("Connect your Notes account to continue: "), text
            link = link_in(text)
            # Links carry no credentials and no personal data.
            assert "alice" not in link and "corp.example" not in link and token not in link
            assert urlparse(link).path == "/connect/notes"
            assert notes_status(await doorman_whoami(c))["status"] == "not connected"
            page = await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            assert page.status_code == 200 and "Notes is connected" in page.text, page.text
            assert "alice@work.example" in page.text and "close this tab" in page.text
            got = await whoami_of(c)
            assert got["sub"] == "sub-alice-work" and "notes:read" in got["scopes"], got
            assert got["token_sha256_prefix"] != sha12(token), "Doorman's own token went upstream"
            who = await doorman_whoami(c)
            notes = notes_status(who)
            assert who["person"] == "alice@corp.example"
            assert notes["status"] == "connected" and notes["accounts"][0]["account"] == "alice@work.example"
            assert notes["accounts"][0]["active"] is True

    anyio.run(run)


def test_url_elicitation_error_then_completion_notification(envs):
    e = envs("l2-elicit")
    token = doorman_token(e, "alice")
    completed: list[str] = []

    async def on_message(msg):
        root = getattr(msg, "root", msg)
        if getattr(root, "method", None) == "notifications/elicitation/complete":
            completed.append(root.params.elicitation_id)

    async def never_called(ctx, params):  # declares elicitation (form and url)
        raise AssertionError("Doorman sends no elicitation/create requests on 2025-11-25")

    async def run():
        http, c = client(e, token, elicitation_callback=never_called, message_handler=on_message)
        async with http, c:
            await c.list_tools()  # opens the session's GET stream via the SDK
            with pytest.raises(MCPError) as err:
                await c.call_tool("notes_whoami", {})
            assert err.value.code == -32042
            (el,) = UrlElicitationRequiredError.from_error(err.value.error).elicitations
            assert el.mode == "url" and el.url.startswith(f"{e.d.base}/connect/notes?prompt=")
            assert "Connect your Notes account" in el.message
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", el.url))
            with anyio.fail_after(10):
                while el.elicitation_id not in completed:
                    await anyio.sleep(0.05)
            got = await whoami_of(c)
            assert got["sub"] == "sub-alice-work"

    anyio.run(run)


def test_input_required_round_trip_on_the_stateless_revision(envs):
    e = envs("l2-mrtr")
    token = doorman_token(e, "alice")
    asked: list[dict] = []

    async def elicit(ctx, params):
        asked.append({"mode": params.mode, "url": params.url, "message": params.message})
        await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", params.url))
        return ElicitResult(action="accept")

    async def run():
        http, c = client(e, token, mode="2026-07-28", elicitation_callback=elicit)
        async with http, c:
            got = await whoami_of(c)  # the SDK drives the InputRequiredResult loop
            assert got["sub"] == "sub-alice-work"
            assert len(asked) == 1 and asked[0]["mode"] == "url"
            assert asked[0]["url"].startswith(f"{e.d.base}/connect/notes?prompt=")

    anyio.run(run)


def test_request_state_is_tamper_evident_and_bound_to_its_person_and_request(envs):
    e = envs("l2-state")
    alice, bob = doorman_token(e, "alice"), doorman_token(e, "bob")
    caps = {"elicitation": {"url": {}, "form": {}}}

    def call(token: str, name: str, extra: dict | None = None) -> dict:
        params = {"name": name, "arguments": {}, **(extra or {})}
        body = modern_request("tools/call", params)
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps
        h = modern_headers("tools/call", name)
        h["Authorization"] = f"Bearer {token}"
        r = httpx2.post(e.d.url, headers=h, json=body, timeout=30)
        return r.json()

    first = call(alice, "notes_whoami")["result"]
    assert first["resultType"] == "input_required"
    state = first["requestState"]
    assert state.startswith("doorman1.") and "alice" not in state
    req = first["inputRequests"]["connect"]
    assert req["method"] == "elicitation/create" and req["params"]["mode"] == "url"
    declined = {"inputResponses": {"connect": {"action": "decline"}}}
    # Tampered: one character changed.
    flipped = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    for bad, token, name in [(flipped, alice, "notes_whoami"),       # tampered
                             (state, bob, "notes_whoami"),           # another person
                             (state, alice, "notes_read_note")]:     # another request
        err = call(token, name, {"requestState": bad, **declined})["error"]
        assert err["code"] == -32602 and err["data"]["reason"] == "invalid_request_state", err
    # The genuine state, declined by the person: a tool error, nothing connected.
    ok = call(alice, "notes_whoami", {"requestState": state, **declined})["result"]
    assert ok["isError"] is True and "declined" in ok["content"][0]["text"]
    # Expired.
    advance_clock(e.d, 16 * 60)
    err = call(alice, "notes_whoami", {"requestState": state, **declined})["error"]
    assert err["data"]["reason"] == "invalid_request_state"


# ---------------------------------------------------------------------------------------------
# The connect page and callback: the anti-phishing rule, state, errors


def prompt_link(e: Env, token: str) -> str:
    """A text-form prompt for `token`'s person on a fresh stateless conversation."""
    h = modern_headers("tools/call", "notes_whoami")
    h["Authorization"] = f"Bearer {token}"
    r = httpx2.post(e.d.url, headers=h, json=modern_request("tools/call", {"name": "notes_whoami", "arguments": {}}),
                    timeout=30)
    result = r.json()["result"]
    assert result["isError"] is True, result
    return link_in(result["content"][0]["text"])


def connection_rows(e: Env) -> list[tuple]:
    db = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT user_id, resource, account, binding FROM connections").fetchall()
    finally:
        db.close()


def test_another_person_opening_the_link_is_refused_and_nothing_is_stored(envs):
    e = envs("l2-phish")
    alice = doorman_token(e, "alice")
    doorman_token(e, "bob")  # bob's browser is signed in to Doorman
    link = prompt_link(e, alice)
    r = e.browser("bob").get(link)
    assert r.status_code == 403 and "This link is not for you" in r.text
    assert "location" not in r.headers
    assert connection_rows(e) == []
    # Not signed in at all: sent to sign in, to come back to this very link.
    anon = httpx2.get(link, timeout=30)
    assert anon.status_code == 303, anon.text
    assert anon.headers["location"] == "/sign-in/browser?" + urlencode({"return_to": link.split(e.d.base, 1)[1]})
    # Unknown or forged prompt ids.
    for bad in (link + "x", link.split("?")[0], link.replace("/connect/notes", "/connect/other")):
        r = e.browser("alice").get(bad)
        assert r.status_code == 400 and "expired" in r.text, bad
    assert connection_rows(e) == []


def alice_id(e: Env) -> str:
    db = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT id FROM users WHERE username = 'alice'").fetchone()[0]
    finally:
        db.close()


def test_a_link_opened_while_signed_out_signs_in_and_returns_to_the_same_step(envs):
    """A person opens the connect link in a browser that is not signed in to Doorman (another
    device, a private window): Doorman's sign-in, then the same connect step, then the resource.
    Someone else signing in there is refused as before, and nothing is stored."""
    e = envs("l2-return")
    alice = doorman_token(e, "alice")
    link = prompt_link(e, alice)
    fresh = Browser(e.d)
    try:
        to_resource = fresh.authorize(link, "alice", PASSWORD)
        assert [urlparse(str(p.url)).path for p in fresh.pages[:4]] == [
            urlparse(link).path, "/sign-in/browser", "/sign-in", "/sign-in"], [p.url for p in fresh.pages]
        assert str(fresh.pages[4].url) == link, "signed in, the browser came back to the same link"
        assert to_resource.startswith(e.idp.issuer + "/auth"), to_resource
        with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
            back = idp_walk(idp_http, to_resource, e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0], "allow")
        page = fresh.get(back)
        assert page.status_code == 200 and "Notes is connected" in page.text, page.text
    finally:
        fresh.close()
    # The page to return to held the link's prompt id, a secret: never stored in clear.
    prompt_id = query_of(link)["prompt"][0]
    assert prompt_id not in json.dumps(store_snapshot(e.d), default=str), "a prompt id was stored in clear"
    assert [r[:2] for r in connection_rows(e)] == [(alice_id(e), "notes")]
    # Bob signs in where alice's link was opened: the link is not his.
    other_link = prompt_link(e, doorman_token(e, "alice"))
    bobs = Browser(e.d)
    try:
        r = bobs.get(other_link)
        r = bobs.get(f"{e.d.base}{r.headers['location']}")
        assert r.status_code == 303 and r.headers["location"].startswith("/sign-in?request="), r.text
        page = bobs.get(f"{e.d.base}{r.headers['location']}")
        form = next(f for f in forms_of(page.text) if "password" in f.fields)
        r = bobs.submit(str(page.url), form, {"username": "bob", "password": PASSWORD})
        assert r.status_code == 303 and f"{e.d.base}{r.headers['location']}" == other_link, r.headers
        r = bobs.get(other_link)
        assert r.status_code == 403 and "This link is not for you" in r.text
    finally:
        bobs.close()
    assert [r[:2] for r in connection_rows(e)] == [(alice_id(e), "notes")]


@pytest.mark.parametrize("return_to", ["https://evil.example/x", "//evil.example/x", "/\\evil.example/x", "", "x"])
def test_a_browser_sign_in_returns_only_to_doormans_own_pages(envs, return_to):
    e = envs("l2-return-open")
    r = httpx2.get(f"{e.d.base}/sign-in/browser?" + urlencode({"return_to": return_to}), timeout=30)
    assert r.status_code == 400 and "location" not in r.headers, (r.status_code, r.headers)


def test_state_is_single_use_short_lived_and_errors_store_nothing(envs):
    e = envs("l2-statecb")
    alice = doorman_token(e, "alice")
    b = e.browser("alice")

    def to_callback(link: str, decision: str = "allow") -> str:
        r = b.get(link)
        with httpx2.Client(timeout=30, follow_redirects=False) as h:
            return idp_walk(h, r.headers["location"], e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0], decision)

    # The resource answers with an error (the person denied): a page, nothing stored.
    back = to_callback(prompt_link(e, alice), decision="deny")
    r = b.get(back)
    assert r.status_code == 400 and "Notes was not connected" in r.text and "declined" in r.text
    assert connection_rows(e) == []
    # A state that expired (10 minutes) is refused.
    back = to_callback(prompt_link(e, alice))
    advance_clock(e.d, 11 * 60)
    r = b.get(back)
    assert r.status_code == 400 and "cannot be completed" in r.text
    assert connection_rows(e) == []
    # Forged state.
    r = b.get(f"{e.d.base}/connect/callback?state=forged&code=x")
    assert r.status_code == 400 and "cannot be completed" in r.text
    # A good one works once; replayed, refused.
    back = to_callback(prompt_link(e, alice))
    assert b.get(back).status_code == 200
    r = b.get(back)
    assert r.status_code == 400 and "cannot be completed" in r.text
    assert len(connection_rows(e)) == 1


def with_query(url: str, **changes) -> str:
    """`url` with query parameters replaced (None removes one)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    parts = urlsplit(url)
    q = [(k, v) for k, v in parse_qsl(parts.query) if k not in changes]
    q += [(k, v) for k, v in changes.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(q)))


def test_an_answer_from_another_authorization_server_is_refused(envs):
    """RFC 9207 / RFC 9700 §4.4 (mix-up): each connect flow is bound to the issuer it was sent
    to. An answer whose `iss` names another server, or that lacks `iss` when the server says it
    always sends one, is refused before its code or error is used; nothing is stored."""
    e = envs("l2-mixup")
    alice = doorman_token(e, "alice")
    b = e.browser("alice")

    def to_callback() -> str:
        r = b.get(prompt_link(e, alice))
        with httpx2.Client(timeout=30, follow_redirects=False) as h:
            return idp_walk(h, r.headers["location"], e.idp, "alice-work", IDP_ACCOUNTS["alice-work"][0])

    for forged in ({"iss": "https://attacker.example"}, {"iss": e.idp.issuer + "/other"}, {"iss": None}):
        back = to_callback()
        assert query_of(back)["iss"] == [e.idp.issuer], back
        r = b.get(with_query(back, **forged))
        assert r.status_code == 400 and "issuer does not match" in r.text, (forged, r.text[:300])
        assert connection_rows(e) == [], forged
    # The same flow with the real answer works.
    back = to_callback()
    assert b.get(back).status_code == 200
    assert len(connection_rows(e)) == 1


# ---------------------------------------------------------------------------------------------
# Bindings and lifetimes


def test_session_binding_dies_with_the_session_and_is_revoked_at_the_resource(envs):
    e = envs("l2-session")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            assert (await whoami_of(c))["sub"] == "sub-alice-work"
        # Leaving the block sends DELETE for the session.

    before = len(e.idp.revocations())
    anyio.run(run)
    for _ in range(100):
        if not connection_rows(e) and len(e.idp.revocations()) > before:
            break
        anyio.run(anyio.sleep, 0.1)
    assert connection_rows(e) == []
    hints = [r["token_type_hint"] for r in e.idp.revocations()[before:]]
    assert "refresh_token" in hints, hints

    # A new conversation starts unconnected.
    async def again():
        http, c = client(e, token)
        async with http, c:
            assert (await c.call_tool("notes_whoami", {})).is_error

    anyio.run(again)


def test_user_binding_survives_a_new_session_and_max_age_asks_again(envs):
    e = envs("l2-user", binding="user", max_age="2h")
    token = doorman_token(e, "alice")

    async def first():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))

    async def later(expect_prompt: bool, text: str = ""):
        http, c = client(e, doorman_token(e, "alice"), mode="2026-07-28")
        async with http, c:
            r = await c.call_tool("notes_whoami", {})
            assert r.is_error == expect_prompt, text_of(r)
            if expect_prompt:
                assert text in text_of(r)

    anyio.run(first)
    anyio.run(later, False)
    advance_clock(e.d, 3 * 3600)  # past max_age (the access token is refreshed before, too)
    anyio.run(later, True, "older than this tool allows")


def test_call_binding_asks_every_call(envs):
    e = envs("l2-call", binding="call")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            assert (await whoami_of(c))["sub"] == "sub-alice-work"
            again = await c.call_tool("notes_whoami", {})
            assert again.is_error and "Connect your Notes account" in text_of(again)

    before = len(e.idp.revocations())
    anyio.run(run)
    assert connection_rows(e) == []
    assert len(e.idp.revocations()) > before  # the spent connection was revoked


def test_shared_binding_serves_everyone_with_the_operators_credential(envs):
    from resource_peers import obtain_tokens
    port = free_port()
    notes_port = free_port()
    audience = f"http://127.0.0.1:{notes_port}/mcp"
    idp = start_idp(clients=[idp_client("ops", "ops-secret", [CLIENT_REDIRECT])],
                    accounts=[account("ops-bot", "pw-ops", email="ops@work.example")],
                    resource_server=resource_server(audience), name="l2-shared-idp")
    notes = start_resource_upstream(notes_port, idp.issuer, audience, name="l2-shared-notes")
    # The operator's one credential: a real token of the resource, obtained out of band.
    shared = obtain_tokens(idp, "ops", "ops-secret", CLIENT_REDIRECT, "ops-bot", "pw-ops", "notes:read")
    e = envs("l2-shared", port=port, idp=idp, notes=notes, shared=shared["access_token"])
    tokens = {u: doorman_token(e, u) for u in ("alice", "bob")}

    async def run(user: str):
        http, c = client(e, tokens[user])
        async with http, c:
            assert (await whoami_of(c))["sub"] == "sub-ops-bot"
            assert notes_status(await doorman_whoami(c))["status"] == "shared"

    anyio.run(run, "alice")
    anyio.run(run, "bob")
    assert connection_rows(e) == []
    # Still recorded per person.
    log = e.d.log()
    assert log.count("shared credential used") >= 2


def test_two_accounts_and_switching_between_them(envs):
    e = envs("l2-accounts", binding="user")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link, "alice-work"))
            r = await c.call_tool("doorman_connect", {"resource": "notes"})
            assert not r.is_error
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link_in(text_of(r)), "alice-test"))
            # The most recently connected account is active.
            assert (await whoami_of(c))["sub"] == "sub-alice-test"
            who = notes_status(await doorman_whoami(c))
            assert {a["account"] for a in who["accounts"]} == {"alice@work.example", "alice-test@work.example"}
            r = await c.call_tool("doorman_use_account", {"resource": "notes", "account": "alice@work.example"})
            assert not r.is_error, text_of(r)
            assert (await whoami_of(c))["sub"] == "sub-alice-work"
            r = await c.call_tool("doorman_use_account", {"resource": "notes", "account": "nobody@x"})
            assert r.is_error
            r = await c.call_tool("doorman_disconnect", {"resource": "notes"})
            assert not r.is_error and "alice@work.example" in text_of(r)
            assert (await whoami_of(c))["sub"] == "sub-alice-test"

    anyio.run(run)


def test_expired_tokens_refresh_once_for_many_concurrent_calls(envs):
    e = envs("l2-refresh", binding="user", access_ttl=600)
    token = doorman_token(e, "alice")
    connect_once(e, token)
    refreshes = e.idp.count("/token", grant_type="refresh_token")
    advance_clock(e.d, 700)  # Doorman's copy of the access token has expired

    async def many():
        http, c = client(e, token, mode="2026-07-28")
        async with http, c:
            subs: list[str] = []

            async def one():
                subs.append((await whoami_of(c))["sub"])

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
            assert subs == ["sub-alice-work"] * 12

    anyio.run(many)
    assert e.idp.count("/token", grant_type="refresh_token") == refreshes + 1


def test_a_failed_refresh_asks_the_person_again(envs):
    e = envs("l2-refresh-fail", binding="user", access_ttl=600)
    token = doorman_token(e, "alice")
    connect_once(e, token)
    advance_clock(e.d, 700)
    e.idp.fail("/token", status=400, grant_type="refresh_token", error="invalid_grant")

    async def call():
        http, c = client(e, token)
        async with http, c:
            r = await c.call_tool("notes_whoami", {})
            assert r.is_error and "no longer works" in text_of(r), text_of(r)

    anyio.run(call)


# ---------------------------------------------------------------------------------------------
# Secrets at rest and in logs


def test_no_token_in_clear_in_the_database_or_the_logs(envs):
    e = envs("l2-secrets", binding="user")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            got = await whoami_of(c)
            return got["token_sha256_prefix"]

    anyio.run(run)
    data = b""
    for f in (e.d.dir / "data").iterdir():
        if f.name.startswith("doorman.db"):
            data += f.read_bytes()
    # A JWT is a base64url JSON header, a dot, and a base64url JSON payload: `eyJ…​.eyJ…`.
    # Sealed values are base64url too, so the three letters "eyJ" alone turn up by chance.
    assert not JWT_SHAPE.search(data), "a JWT is stored in clear"
    assert NOTES_SECRET.encode() not in data
    log = e.d.log()
    assert not JWT_SHAPE.search(log.encode()) and NOTES_SECRET not in log


# ---------------------------------------------------------------------------------------------
# Per-tool lifetimes, several nodes, operators


def connect_once(e: Env, token: str, user: str = "alice", idp_user: str = "alice-work") -> None:
    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, user, link, idp_user))

    anyio.run(run)


def test_a_tool_policy_shortens_max_age_for_that_tool_only(envs):
    policy = '\n[[policies]]\ntools = ["notes_write_*"]\nmax_age = "1h"\n'
    e = envs("l2-policy", binding="user", max_age="8h", extra=policy)
    connect_once(e, doorman_token(e, "alice"))
    advance_clock(e.d, 2 * 3600)

    async def run():
        http, c = client(e, doorman_token(e, "alice"))
        async with http, c:
            w = await c.call_tool("notes_write_note", {"name": "a", "text": "b"})
            assert w.is_error and "older than this tool allows" in text_of(w), text_of(w)
            assert (await whoami_of(c))["sub"] == "sub-alice-work"  # the resource's 8 h still hold

    anyio.run(run)


def test_two_nodes_on_one_postgres_refresh_once(envs):
    ring = f"k1 {secrets.token_urlsafe(32)}\n"
    url = fresh_postgres_url()
    shared_env = {"DOORMAN_KEY_RING": ring}
    a = envs("l2-node-a", binding="user", access_ttl=600, database_url=url, env=shared_env)
    b = envs("l2-node-b", binding="user", access_ttl=600, database_url=url, env=shared_env,
             idp=a.idp, notes=a.notes)
    connect_once(a, doorman_token(a, "alice"))
    tokens = {n: doorman_token(n, "alice") for n in (a, b)}
    before = a.idp.count("/token", grant_type="refresh_token")
    for n in (a, b):
        advance_clock(n.d, 700)

    async def many():
        results: list[str] = []

        async def on(n: Env, count: int):
            http, c = client(n, tokens[n], mode="2026-07-28")
            async with http, c:
                async with anyio.create_task_group() as tg:
                    for _ in range(count):
                        async def one():
                            results.append((await whoami_of(c))["sub"])
                        tg.start_soon(one)

        async with anyio.create_task_group() as tg:
            tg.start_soon(on, a, 6)
            tg.start_soon(on, b, 6)
        assert results == ["sub-alice-work"] * 12

    anyio.run(many)
    assert a.idp.count("/token", grant_type="refresh_token") == before + 1


def cli(e: Env, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(DOORMAN_BIN), *args, "--config", str(e.d.config)], capture_output=True,
                         text=True, timeout=60)
    return out


def test_operators_list_and_revoke_connections(envs):
    e = envs("l2-cli", binding="user")
    connect_once(e, doorman_token(e, "alice"))
    out = cli(e, "connections", "list", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["user"] == "alice" and row["resource"] == "notes" and row["account"] == "alice@work.example"
    assert not JWT_SHAPE.search(out.stdout.encode()), "no token in the listing"
    assert json.loads(cli(e, "connections", "list", "--json", "--user", "bob").stdout) == []
    assert cli(e, "connections", "revoke").returncode != 0  # no filter: refused
    before = len(e.idp.revocations())
    out = cli(e, "connections", "revoke", "--user", "alice", "--resource", "notes")
    assert out.returncode == 0 and "revoked 1 connection" in out.stdout, out.stdout + out.stderr
    assert connection_rows(e) == []
    for _ in range(100):  # the server makes the queued revocations within seconds
        if len(e.idp.revocations()) > before:
            break
        anyio.run(anyio.sleep, 0.1)
    assert len(e.idp.revocations()) > before


def test_a_new_sealing_key_is_picked_up_and_connections_are_resealed(envs):
    e = envs("l2-keys", binding="user")
    token = doorman_token(e, "alice")
    connect_once(e, token)
    db = e.d.dir / "data" / "doorman.db"

    def sealed_key_ids() -> set[str]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return {r[0].split(".")[0] for r in con.execute("SELECT access_token_sealed FROM connections")}
        finally:
            con.close()

    (old,) = sealed_key_ids()
    out = cli(e, "keys", "add-sealing-key")
    assert out.returncode == 0, out.stderr
    for _ in range(150):
        ids = sealed_key_ids()
        if ids and ids != {old}:
            break
        anyio.run(anyio.sleep, 0.1)
    (new,) = sealed_key_ids()
    assert new != old and new in (e.d.dir / "data" / "keyring").read_text()

    async def still_works():
        http, c = client(e, token)
        async with http, c:
            assert (await whoami_of(c))["sub"] == "sub-alice-work"

    anyio.run(still_works)


# ---------------------------------------------------------------------------------------------
# Upstreams that do MCP authorization themselves; more scopes on demand


def test_an_upstream_doing_mcp_authorization_becomes_a_resource(envs):
    port, wiki_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    audience = f"http://127.0.0.1:{wiki_port}/mcp"
    idp = start_idp(clients=[], accounts=[account(u, pw, email=em) for u, (pw, em) in IDP_ACCOUNTS.items()],
                    resource_server=resource_server(audience, always_refresh=True, registration=True),
                    name="l2-discover-idp")
    wiki = start_resource_upstream(wiki_port, idp.issuer, audience, self_auth=True, name="l2-discover-wiki")
    d = oauth.accounts_doorman("l2-discover", [{"name": "wiki", "url": wiki.url}], port=port,
                               server={"session_idle_timeout": "1d"},
                               extra_toml=f'[[sign_in.clients]]\nclient_id = "tester"\nname = "Tester"\n'
                                          f'redirect_uris = ["{CLIENT_REDIRECT}"]\n')
    e = Env(d, idp, wiki)
    try:
        add_user(d, "alice", PASSWORD, email="alice@corp.example")
        token = doorman_token(e, "alice")
        # Doorman's own client metadata document, at its stable URL.
        doc = httpx2.get(f"{base}/oauth/doorman-client.json", timeout=10).json()
        assert doc["client_id"] == f"{base}/oauth/doorman-client.json"
        # Each upstream that may become a resource this way has its own redirect URI (RFC 9700
        # §4.4.2): an answer meant for one authorization server cannot be taken for another's.
        own = f"{base}/connect/callback/wiki"
        assert doc["redirect_uris"] == [own] and doc["token_endpoint_auth_method"] == "none"

        async def run():
            http, c = client(e, token)
            async with http, c:
                first = await c.call_tool("wiki_whoami", {})
                # Named by the upstream's metadata (`resource_name`); the link is /connect/<upstream>.
                assert first.is_error and "Connect your Notes (Doorman test resource) account" in text_of(first)
                link = link_in(text_of(first))
                assert urlparse(link).path == "/connect/wiki"

                def steered():
                    # The resource's answer, delivered to the shared callback path instead of
                    # the resource's own: refused, nothing connected.
                    b = e.browser("alice")
                    to_resource = b.get(link).headers["location"]
                    q = query_of(to_resource)
                    assert q["redirect_uri"] == [own], q
                    r = b.get(f"{base}/connect/callback?" + urlencode(
                        {"state": q["state"][0], "code": "stolen", "iss": idp.issuer}))
                    assert r.status_code == 400 and "address of another connection" in r.text, r.text
                    assert connection_rows(e) == []

                await anyio.to_thread.run_sync(steered)
                await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
                got = await whoami_of_tool(c, "wiki_whoami")
                assert got["sub"] == "sub-alice-work" and got["aud"] == audience, got
                assert got["token_sha256_prefix"] != sha12(token)
                # Another conversation reuses the registration.
                second = await c.call_tool("wiki_read_note", {"name": "x"})
                assert not second.is_error or "insufficient" not in text_of(second)

        anyio.run(run)
        regs = idp.registrations()
        assert len(regs) == 1, regs
        (reg,) = regs
        assert reg["params"]["redirect_uris"] == [own]
        assert reg["params"]["token_endpoint_auth_method"] == "none"
        # The authorization and the token carried the RFC 8707 resource indicator.
        auths = idp.requests("/auth")
        assert auths and all(a["params"].get("resource") == audience for a in auths), auths
        assert all(a["params"].get("redirect_uri") == own for a in auths), auths
        tokens = [r for r in idp.requests("/token") if r["params"].get("grant_type") == "authorization_code"]
        assert tokens and all(t["params"].get("resource") == audience for t in tokens), tokens
    finally:
        e.stop()


async def whoami_of_tool(c: Client, name: str) -> dict:
    r = await c.call_tool(name, {})
    assert not r.is_error, text_of(r)
    return json.loads(text_of(r))


def test_insufficient_scope_asks_for_the_union_of_scopes(envs):
    # The resource asks for notes:read only; the upstream needs notes:write as well.
    e = envs("l2-scope", binding="user", scopes='"openid", "email", "notes:read"',
             required_scopes="notes:read notes:write")
    token = doorman_token(e, "alice")

    async def run():
        http, c = client(e, token)
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            more = await c.call_tool("notes_whoami", {})
            assert more.is_error and "needs more access" in text_of(more), text_of(more)
            link = link_in(text_of(more))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            got = await whoami_of(c)
            assert {"notes:read", "notes:write"} <= set(got["scopes"]), got

    anyio.run(run)
    asked = [a["params"].get("scope", "") for a in e.idp.requests("/auth")]
    assert "notes:write" not in asked[0] and {"notes:read", "notes:write", "openid"} <= set(asked[-1].split()), asked
    # Re-authorizing the same account replaced the connection (no pile-up).
    assert len(connection_rows(e)) == 1


def test_stateless_conversations_connections_end_after_an_idle_window(envs):
    e = envs("l2-idle")  # binding "session"; session_idle_timeout is 1 d in these tests
    token = doorman_token(e, "alice")

    async def connect_and_use():
        http, c = client(e, token, mode="2026-07-28")
        async with http, c:
            link = link_in(text_of(await c.call_tool("notes_whoami", {})))
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link))
            assert (await whoami_of(c))["sub"] == "sub-alice-work"

    anyio.run(connect_and_use)
    ((_, _, _, binding),) = connection_rows(e)
    assert binding == "session"
    before = len(e.idp.revocations())
    advance_clock(e.d, 25 * 3600)
    for _ in range(100):  # the idle sweep runs every 2 s; the revocation follows the delete
        if not connection_rows(e) and len(e.idp.revocations()) > before:
            break
        anyio.run(anyio.sleep, 0.1)
    assert connection_rows(e) == []
    assert len(e.idp.revocations()) > before
