"""The web console a person and an administrator see: `/` (home), `/admin`, and the first-run
path from the setup link to `/admin`. Driven with real HTTP and real forms (the page walker in
oauth.py); the same pages in headless Chromium, with axe-core, are in test_console_browser.py.

What a user would notice: a visitor gets a sign-in button; a signed-out browser on /admin signs in
and comes back; a person sees the clients they approved by name and revoking one stops its
tokens at once; an administrator disables and enables people, resets TOTP, revokes sign-ins and
clients, sees upstream health; nobody else can do any of it."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import struct
import subprocess
import time
from urllib.parse import unquote, urlencode

import httpx2
import pytest

from conftest import DOORMAN_BIN, Doorman, store_unchanged
from oauth import Browser, accounts_doorman, add_user, forms_of, pkce, query_of
from procs import free_port
from test_policy_audit import call_tool, mcp_post

CLIENT = "console-client"
CLIENT_NAME = "Console Test App"
REDIRECT = "http://127.0.0.1/callback"
CLIENTS_TOML = f"""
[[sign_in.clients]]
client_id = "{CLIENT}"
name = "{CLIENT_NAME}"
redirect_uris = ["{REDIRECT}"]
"""
ROOT_PW = "the administrator's long password"
ALICE_PW = "alice's long password"
BOB_PW = "bob's long password"


def cli(d, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DOORMAN_BIN), *args, "--config", str(d.config)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def sign_in(d, user: str, password: str, client: str = CLIENT, redirect: str = REDIRECT) -> tuple[Browser, dict]:
    """A person's browser through the authorization code flow at `client`; (the browser, still
    signed in to Doorman, and the token response)."""
    verifier, challenge = pkce()
    query = urlencode({"response_type": "code", "client_id": client, "redirect_uri": redirect,
                       "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
                       "resource": f"{d.base}/mcp"})
    b = Browser(d)
    back = b.authorize(f"{d.base}/oauth/authorize?{query}", user, password)
    r = httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": query_of(back)["code"][0], "redirect_uri": redirect,
        "code_verifier": verifier, "client_id": client})
    assert r.status_code == 200, r.text
    return b, r.json()


def browser_signed_in(d, user: str, password: str) -> Browser:
    """A browser signed in to Doorman only (no client): /sign-in/browser?return_to=/."""
    b = Browser(d)
    r = b.get(f"{d.base}/sign-in/browser?return_to=%2F")
    assert r.status_code == 303, r.text
    page_url = d.base + r.headers["location"]
    page = b.get(page_url)
    form = next(f for f in forms_of(page.text) if "password" in f.fields)
    r = b.submit(page_url, form, {"username": user, "password": password})
    assert r.status_code == 303 and r.headers["location"] == "/", (r.status_code, r.headers, r.text[:300])
    return b


def mcp_status(d, token: str) -> int:
    return mcp_post(d, token, "tools/list").status_code


def post_form(b: Browser, page_url: str, action: str, values: dict[str, str]) -> httpx2.Response:
    """Submits the form of `page_url` whose action is `action` and whose hidden fields match
    `values` where given (the row's id), with the page's own CSRF token."""
    page = b.get(page_url)
    assert page.status_code == 200, page.text[:300]
    for f in forms_of(page.text):
        if f.action == action and all(f.fields.get(k, v) == v for k, v in values.items() if k != "action"):
            return b.submit(page_url, f, values)
    raise AssertionError(f"no form {action} {values} on {page_url}")


def db_rows(d, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(f"file:{d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def text_of(html: str) -> str:
    """The page's text with tags removed and whitespace folded, for phrase assertions."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'").replace("&quot;", '"')


@pytest.fixture(scope="module")
def console(py_upstream):
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    d = accounts_doorman("doorman-console", [{"name": "py", "url": py_upstream.url}, {"name": "gone", "url": dead}],
                         extra_toml=CLIENTS_TOML)
    add_user(d, "root", ROOT_PW, admin=True, email="root@example.com")
    add_user(d, "alice", ALICE_PW, email="alice@example.com")
    add_user(d, "bob", BOB_PW)
    yield d
    d.stop()


# --- Home ----------------------------------------------------------------------------------------


def test_a_visitor_gets_a_sign_in_button_and_the_mcp_url(console):
    r = httpx2.get(f"{console.base}/")
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert 'href="/sign-in/browser?return_to=%2F"' in r.text and "Sign in" in r.text
    assert f"{console.base}/mcp" in r.text
    # No person's data and no navigation of a signed-in person.
    assert "Sign out" not in r.text and "/admin" not in r.text


def test_signed_out_browsers_sign_in_and_return_to_admin_and_home(console):
    for path in ("/admin", "/activity", "/admin/audit?tool=x"):
        r = httpx2.get(f"{console.base}{path}")
        assert r.status_code == 303, (path, r.status_code)
        loc = r.headers["location"]
        assert loc.startswith("/sign-in/browser?return_to="), loc
        assert unquote(loc.split("return_to=", 1)[1]) == path


def test_home_shows_the_approved_client_by_name_and_revoking_it_stops_its_tokens(console):
    b, tokens = sign_in(console, "alice", ALICE_PW)
    assert mcp_status(console, tokens["access_token"]) == 200
    call_tool(console, tokens["access_token"], "py_add", {"a": 2, "b": 3})
    home = b.get(f"{console.base}/")
    assert home.status_code == 200
    text = text_of(home.text)
    assert "Signed in as alice@example.com" in text, text[:500]
    assert CLIENT_NAME in text and "127.0.0.1" in text, text
    # Its navigation: home, connections, activity, sign out; no admin entries for alice.
    assert 'href="/activity"' in home.text and "Sign out" in text
    assert 'href="/admin"' not in home.text
    # Recent activity names the client, not its id.
    deadline = time.monotonic() + 10
    while "tools/call py_add" not in text and time.monotonic() < deadline:
        time.sleep(0.3)
        text = text_of(b.get(f"{console.base}/").text)
    assert "tools/call py_add" in text and "allowed" in text, text

    # Bob cannot revoke alice's client: his own grants at it are what a post names.
    bob, bob_tokens = sign_in(console, "bob", BOB_PW)
    r = post_form(bob, f"{console.base}/", "/grants/revoke", {"client_id": CLIENT})
    assert r.status_code == 200 and "no longer has access" in text_of(r.text)
    assert mcp_status(console, bob_tokens["access_token"]) == 401
    assert mcp_status(console, tokens["access_token"]) == 200

    # Alice revokes it from home: the access token and the refresh token stop at once.
    r = post_form(b, f"{console.base}/", "/grants/revoke", {"client_id": CLIENT})
    assert r.status_code == 200, r.text[:300]
    assert f"{CLIENT_NAME} no longer has access" in text_of(r.text)
    assert mcp_status(console, tokens["access_token"]) == 401
    refreshed = httpx2.post(f"{console.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLIENT})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
    assert CLIENT_NAME not in text_of(b.get(f"{console.base}/").text).split("Recent activity")[0]
    # Its approval went with it: the still signed-in browser is asked again, not waved through.
    _, challenge = pkce()
    again = b.get(f"{console.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": "s", "resource": f"{console.base}/mcp"}))
    assert again.status_code == 303 and again.headers["location"].startswith("/consent"), again.headers
    b.close()
    bob.close()


def test_forms_without_the_browsers_csrf_token_change_nothing(console):
    b, tokens = sign_in(console, "alice", ALICE_PW)
    admin = browser_signed_in(console, "root", ROOT_PW)
    alice_id = db_rows(console, "SELECT id FROM users WHERE username = 'alice'")[0][0]
    with store_unchanged(console):
        for browser_, action, data in (
            (b, "/grants/revoke", {"client_id": CLIENT}),
            (admin, "/admin/people", {"id": alice_id, "action": "disable"}),
            (admin, "/admin/clients/revoke", {"client_id": CLIENT}),
            (admin, "/sign-out", {}),
        ):
            for csrf in (None, "x" * 43):
                body = dict(data) | ({"csrf": csrf} if csrf else {})
                r = browser_.http.post(f"{console.base}{action}", data=body)
                assert r.status_code == 400 and "Form expired" in r.text, (action, r.status_code)
    assert mcp_status(console, tokens["access_token"]) == 200
    assert admin.get(f"{console.base}/admin").status_code == 200
    # The right token, posted from another origin (another site's page in the same browser):
    # refused as well. And an empty cookie with an empty field is no match.
    page = admin.get(f"{console.base}/admin")
    csrf = next(f for f in forms_of(page.text) if f.action == "/sign-out").fields["csrf"]
    with store_unchanged(console):
        for headers in ({"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site", "Origin": console.base}):
            r = admin.http.post(f"{console.base}/admin/people", data={"id": alice_id, "action": "disable", "csrf": csrf},
                                headers=headers)
            assert r.status_code == 400 and "Form expired" in r.text, headers
        r = httpx2.post(f"{console.base}/sign-out", data={"csrf": ""}, headers={"Cookie": "doorman_csrf="})
        assert r.status_code == 400
    # Doorman's own origin is fine.
    r = admin.http.post(f"{console.base}/admin/people", data={"id": alice_id, "action": "enable", "csrf": csrf},
                        headers={"Origin": console.base})
    assert r.status_code == 200 and "Enabled alice" in text_of(r.text)
    b.close()
    admin.close()


def test_sign_out_ends_the_browser_sign_in_but_not_the_clients(console):
    b, tokens = sign_in(console, "bob", BOB_PW)
    session = b.http.cookies["doorman_session"]
    r = post_form(b, f"{console.base}/", "/sign-out", {})
    assert r.status_code == 303 and r.headers["location"] == "/"
    home = b.get(f"{console.base}/")
    assert "Welcome to Doorman" in home.text and "Sign out" not in home.text
    # The old cookie is gone from the store too: replaying it signs nobody in.
    replayed = httpx2.get(f"{console.base}/", headers={"Cookie": f"doorman_session={session}"})
    assert "Welcome to Doorman" in replayed.text and "Signed in as" not in replayed.text
    # The client's own sign-in is not the browser's: it keeps working.
    assert mcp_status(console, tokens["access_token"]) == 200
    b.close()


# --- Admin ---------------------------------------------------------------------------------------


def test_admin_is_for_administrators_only(console):
    b, _ = sign_in(console, "alice", ALICE_PW)
    r = b.get(f"{console.base}/admin")
    assert r.status_code == 403 and "Administrators only" in r.text
    assert b.get(f"{console.base}/admin/audit").status_code == 403
    bob_id = db_rows(console, "SELECT id FROM users WHERE username = 'bob'")[0][0]
    # Alice posts admin forms with her own valid CSRF token: refused, nothing changes.
    csrf = next(f for f in forms_of(b.get(f"{console.base}/").text) if f.action == "/sign-out").fields["csrf"]
    with store_unchanged(console):
        for action, data in (("/admin/people", {"id": bob_id, "action": "disable"}),
                             ("/admin/clients/revoke", {"client_id": CLIENT}),
                             ("/admin/grants/revoke", {"id": "anything"})):
            r = b.http.post(f"{console.base}{action}", data={**data, "csrf": csrf})
            assert r.status_code == 403, (action, r.status_code, r.text[:200])
    b.close()


def test_admin_lists_people_clients_sign_ins_and_upstream_health(console):
    _, tokens = sign_in(console, "alice", ALICE_PW)
    call_tool(console, tokens["access_token"], "py_add", {"a": 1, "b": 1})
    gone = mcp_post(console, tokens["access_token"], "tools/call", {"name": "gone_anything", "arguments": {}},
                    name="gone_anything")
    assert gone.status_code == 200
    admin = browser_signed_in(console, "root", ROOT_PW)
    page = admin.get(f"{console.base}/admin")
    assert page.status_code == 200
    text = text_of(page.text)
    for who in ("root", "alice", "bob", "alice@example.com"):
        assert who in text, who
    assert "Sign-ins at clients" in text and CLIENT_NAME in text
    # Upstream health as this node saw it: py answered, gone failed (and why).
    py_row = re.search(r"<tr>\s*<td><strong>py</strong>.*?</tr>", page.text, re.S).group(0)
    gone_row = re.search(r"<tr>\s*<td><strong>gone</strong>.*?</tr>", page.text, re.S).group(0)
    assert "reachable" in py_row and "answered" in py_row, py_row
    assert "failing" in gone_row and "unreachable" in gone_row, gone_row
    assert "Administration" in text and 'aria-current="page"' in page.text
    admin.close()


def test_admin_disables_and_enables_a_person(console):
    b, tokens = sign_in(console, "bob", BOB_PW)
    assert mcp_status(console, tokens["access_token"]) == 200
    bob_id = db_rows(console, "SELECT id FROM users WHERE username = 'bob'")[0][0]
    admin = browser_signed_in(console, "root", ROOT_PW)
    r = post_form(admin, f"{console.base}/admin", "/admin/people", {"id": bob_id, "action": "disable"})
    assert r.status_code == 200 and "Disabled bob" in text_of(r.text), text_of(r.text)[:400]
    # At once on this node: his token, his browser sign-in, his next sign-in.
    assert mcp_status(console, tokens["access_token"]) == 401
    assert b.get(f"{console.base}/").text.count("Welcome to Doorman") == 1
    assert db_rows(console, "SELECT disabled_at IS NOT NULL FROM users WHERE id = ?", bob_id) == [(1,)]
    r = post_form(admin, f"{console.base}/admin", "/admin/people", {"id": bob_id, "action": "enable"})
    assert "Enabled bob" in text_of(r.text)
    _, again = sign_in(console, "bob", BOB_PW)
    assert mcp_status(console, again["access_token"]) == 200
    # The audit says who did it.
    deadline = time.monotonic() + 10
    events = []
    while time.monotonic() < deadline and len(events) < 2:
        events = db_rows(console, "SELECT event, person, detail FROM audit_events WHERE person_id = ? "
                         "AND event IN ('person_disabled', 'person_enabled') ORDER BY id", bob_id)
        time.sleep(0.2)
    assert [e[0] for e in events][-2:] == ["person_disabled", "person_enabled"], events
    assert all("by administrator root@example.com" in e[2] for e in events[-2:]), events
    b.close()
    admin.close()


def test_an_administrator_cannot_disable_themselves(console):
    admin = browser_signed_in(console, "root", ROOT_PW)
    page = admin.get(f"{console.base}/admin")
    root_id = db_rows(console, "SELECT id FROM users WHERE username = 'root'")[0][0]
    # No button for it, and a hand-made post is refused.
    assert not [f for f in forms_of(page.text) if f.fields.get("id") == root_id and f.action == "/admin/people"
                and ("action", "disable") in f.buttons]
    csrf = next(f for f in forms_of(page.text) if f.action == "/sign-out").fields["csrf"]
    r = admin.http.post(f"{console.base}/admin/people", data={"id": root_id, "action": "disable", "csrf": csrf})
    assert r.status_code == 200 and "cannot disable yourself" in text_of(r.text)
    assert db_rows(console, "SELECT disabled_at FROM users WHERE id = ?", root_id) == [(None,)]
    admin.close()


def totp_code(seed: bytes) -> str:
    counter = int(time.time() // 30)
    mac = hmac.new(seed, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def test_admin_resets_a_persons_totp(console):
    import base64
    from urllib.parse import parse_qs, urlsplit
    add_user(console, "carol", "carol's long password")
    uri = cli(console, "users", "totp", "carol", "enable").stdout.strip()
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    out = cli(console, "users", "totp", "carol", "confirm", "--code", totp_code(seed))
    assert out.returncode == 0, out.stderr
    carol_id = db_rows(console, "SELECT id FROM users WHERE username = 'carol'")[0][0]
    admin = browser_signed_in(console, "root", ROOT_PW)
    page = admin.get(f"{console.base}/admin")
    carol_row = re.search(r"<tr>\s*<td><strong>carol</strong>.*?</tr>", page.text, re.S).group(0)
    assert "authenticator app" in carol_row and "Reset TOTP" in carol_row, carol_row
    r = post_form(admin, f"{console.base}/admin", "/admin/people", {"id": carol_id, "action": "reset-totp"})
    assert "Removed carol's authenticator app" in text_of(r.text), text_of(r.text)[:300]
    assert db_rows(console, "SELECT totp_secret_sealed FROM local_credentials WHERE user_id = ?", carol_id) == [(None,)]
    # The password alone signs in now.
    sign_in(console, "carol", "carol's long password")[0].close()
    admin.close()


def test_admin_revokes_one_sign_in_and_a_registered_client(console):
    _, alice = sign_in(console, "alice", ALICE_PW)
    admin = browser_signed_in(console, "root", ROOT_PW)
    grant = db_rows(console, "SELECT id FROM grants WHERE revoked_at IS NULL ORDER BY created_at DESC LIMIT 1")[0][0]
    r = post_form(admin, f"{console.base}/admin", "/admin/grants/revoke", {"id": grant})
    assert r.status_code == 200 and f"Revoked that sign-in at {CLIENT_NAME}" in text_of(r.text)
    assert mcp_status(console, alice["access_token"]) == 401

    # A dynamically registered client (RFC 7591), used by bob, revoked as a whole.
    reg = httpx2.post(f"{console.base}/oauth/register", json={
        "client_name": "Registered Helper", "redirect_uris": ["http://127.0.0.1:8765/cb"],
        "token_endpoint_auth_method": "none"})
    assert reg.status_code == 201, reg.text
    cid = reg.json()["client_id"]
    b, bob = sign_in(console, "bob", BOB_PW, client=cid, redirect="http://127.0.0.1:8765/cb")
    page = text_of(admin.get(f"{console.base}/admin").text)
    # A name it chose itself is said to be that.
    assert "Registered Helper (self-registered)" in page, page
    assert "Registered Helper (self-registered)" in text_of(b.get(f"{console.base}/").text)
    r = post_form(admin, f"{console.base}/admin", "/admin/clients/revoke", {"client_id": cid})
    assert "Revoked Registered Helper (self-registered) and its 1 sign-in(s)" in text_of(r.text), text_of(r.text)[:300]
    assert mcp_status(console, bob["access_token"]) == 401
    assert db_rows(console, "SELECT revoked_at IS NOT NULL FROM oauth_clients WHERE client_id = ?", cid) == [(1,)]
    b.close()
    admin.close()


def test_the_admin_audit_names_clients(console):
    _, tokens = sign_in(console, "alice", ALICE_PW)
    call_tool(console, tokens["access_token"], "py_add", {"a": 4, "b": 4})
    admin = browser_signed_in(console, "root", ROOT_PW)
    deadline = time.monotonic() + 10
    while True:
        page = admin.get(f"{console.base}/admin/audit?tool=py_add")
        rows = re.findall(r"<tr>.*?</tr>", page.text, re.S)[1:]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert rows, page.text[:500]
    assert all(CLIENT_NAME in r and f">{CLIENT}<" not in r for r in rows), rows[:2]
    admin.close()


# --- First run -----------------------------------------------------------------------------------


def test_the_setup_link_signs_the_first_administrator_in_and_lands_on_admin(py_upstream):
    d = accounts_doorman("doorman-console-first-run", [{"name": "py", "url": py_upstream.url}])
    try:
        deadline = time.monotonic() + 10
        link = None
        while link is None and time.monotonic() < deadline:
            m = re.search(re.escape(d.base) + r"/setup\?token=[A-Za-z0-9_-]+", d.log())
            link = m and m.group(0)
            time.sleep(0.1)
        assert link, d.log()
        b = Browser(d)
        page = b.get(link)
        form = next(f for f in forms_of(page.text) if "password" in f.fields)
        r = b.submit(link, form, {"username": "first", "password": "a long admin password"})
        assert r.status_code == 303 and r.headers["location"] == "/admin?welcome=1", (r.status_code, r.text[:300])
        admin = b.get(f"{d.base}{r.headers['location']}")
        assert admin.status_code == 200, admin.text[:300]
        text = text_of(admin.text)
        assert "Next steps" in text and f"{d.base}/mcp" in text, text[:600]
        assert "doorman users add NAME --password-stdin" in text and "[[upstreams]]" in text
        assert "first" in text and 'href="/admin"' in admin.text
        # The one-time link is spent; the home page knows the administrator.
        assert b.get(link).status_code == 404
        assert "Signed in as first" in text_of(b.get(f"{d.base}/").text)
        b.close()
    finally:
        d.stop()


def test_local_mode_home_says_where_the_endpoint_is(py_upstream):
    d = Doorman("doorman-console-local", [{"name": "py", "url": py_upstream.url}])
    try:
        r = httpx2.get(f"{d.base}/")
        assert r.status_code == 200 and "local mode" in r.text and f"{d.base}/mcp" in r.text, r.text[:400]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    finally:
        d.stop()


def test_admin_revokes_a_metadata_document_client_and_it_stays_out(console):
    """A client that identifies itself with a Client ID Metadata Document has no registration:
    it is listed from its sign-ins, named with its document's host, and revoking it refuses it
    from then on (its document still resolves)."""
    from test_oauth_negative import DocServer
    docs = DocServer()
    try:
        redirect = "http://127.0.0.1:8766/cb"
        url = docs.put_json("/app.json", {"client_id": docs.url("/app.json"), "client_name": "Doc App",
                                          "redirect_uris": [redirect], "token_endpoint_auth_method": "none",
                                          "grant_types": ["authorization_code", "refresh_token"],
                                          "response_types": ["code"]})
        b, tokens = sign_in(console, "alice", ALICE_PW, client=url, redirect=redirect)
        admin = browser_signed_in(console, "root", ROOT_PW)
        page = admin.get(f"{console.base}/admin")
        row = re.search(r"<tr>\s*<td><strong>Doc App \(127\.0\.0\.1\)</strong>.*?</tr>", page.text, re.S)
        assert row and "metadata document" in row.group(0), text_of(page.text)
        r = post_form(admin, f"{console.base}/admin", "/admin/clients/revoke", {"client_id": url})
        assert "Revoked Doc App (127.0.0.1) and its 1 sign-in(s)" in text_of(r.text), text_of(r.text)[:400]
        assert mcp_status(console, tokens["access_token"]) == 401
        # Refused at the authorization endpoint from now on, with a page (its redirect URI is
        # not trusted any more).
        _, challenge = pkce()
        again = b.get(f"{console.base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": url, "redirect_uri": redirect, "code_challenge": challenge,
            "code_challenge_method": "S256", "state": "s", "resource": f"{console.base}/mcp"}))
        assert again.status_code in (400, 401, 403) and "location" not in again.headers, (again.status_code, again.text[:300])
        b.close()
        admin.close()
    finally:
        docs.stop()
