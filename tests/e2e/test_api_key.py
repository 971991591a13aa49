"""Resources without OAuth (issue 19 item 4): `kind = "api_key"`. A person asked to connect opens
Doorman's connect page, pastes a personal key (and an optional label); Doorman checks it with the
resource's test request, seals it, and sends it to the upstream in the header or the query
parameter the operator named, with the same bindings, accounts and disconnect as a token. The
key is never shown again, in pages or logs.

The service is tests/fixtures/upstream_api_key.py: an MCP server (the Python SDK's) in front of a
key-only API (no real peer of that kind runs here); the person's browser is Doorman's own page
walker, the client raw MCP requests.
"""

from __future__ import annotations

import sqlite3
import subprocess
import json

import httpx2
import pytest

from conftest import DOORMAN_BIN
from oauth import forms_of
from procs import FIXTURES, VENV_PYTHON, Proc, free_port, wait_http
from test_console import text_of
from test_layer2 import link_in
from test_policy_audit import call_tool, local_token, result_text, start_audit_env

pytestmark = pytest.mark.timeout(300)

ADA_KEY = "tk_ada_5b3f0c9e1d7a"
BOB_KEY = "tk_bob_77e1aa02c4f8"
WRONG_KEY = "tk_wrong_000000000000"


def start_service(name: str, key_in: str, keys: str = f"{ADA_KEY}:ada,{BOB_KEY}:bob") -> Proc:
    """tests/fixtures/upstream_api_key.py with `keys` ("key:login,…"), taking them in the header
    or (key_in="query") the query."""
    port = free_port()
    proc = Proc(name, [VENV_PYTHON, FIXTURES / "upstream_api_key.py"],
                env={"PORT": str(port), "API_KEYS": keys, "KEY_IN": key_in, "PYTHONUNBUFFERED": "1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 20, proc)
    except BaseException:
        proc.stop()
        raise
    proc.base = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="module")
def env():
    tracker = start_service("api-key-tracker", "header")
    ledger = start_service("api-key-ledger", "query")
    extra = f"""
[[resources]]
name = "tracker"
display_name = "Tracker"
kind = "api_key"
binding = "user"
token_header = "X-Api-Key"
[resources.api_key]
check_url = "{tracker.base}/api/me"
account_pointer = "/user/login"
help = "Create a key under Settings, API keys, with read access."

[[resources]]
name = "ledger"
kind = "api_key"
prompt = "link"
[resources.api_key]
check_url = "{ledger.base}/api/me"
check_method = "POST"
query = "api_key"
"""
    try:
        e = start_audit_env("doorman-api-key", [
            {"name": "tracker", "url": f"{tracker.base}/mcp", "resource": "tracker"},
            {"name": "ledger", "url": f"{ledger.base}/mcp", "resource": "ledger"},
        ], extra=extra)
    except BaseException:
        tracker.stop()
        ledger.stop()
        raise
    e.tracker, e.ledger = tracker, ledger
    yield e
    e.stop()
    tracker.stop()
    ledger.stop()


def seen(service) -> list[dict]:
    return httpx2.get(f"{service.base}/_seen", timeout=10).json()


def connect_link(e, token: str, tool: str) -> str:
    result = call_tool(e.d, token, tool)
    assert result.get("isError"), result
    return link_in(result_text(result))


def key_form(e, user: str, link: str):
    b = e.browser(user)
    page = b.get(link)
    assert page.status_code == 200, page.text[:300]
    form = next(f for f in forms_of(page.text) if "key" in f.fields)
    return b, page, form


def connections(e) -> list[tuple]:
    db = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT resource, account, binding, access_token_sealed, refresh_token_sealed, "
                          "expires_at FROM connections").fetchall()
    finally:
        db.close()


def test_a_person_pastes_a_key_it_is_checked_sealed_and_sent_in_the_header(env):
    e = env
    alice, _ = local_token(e, "alice")
    link = connect_link(e, alice, "tracker_whoami")
    b, page, form = key_form(e, "alice", link)
    text = text_of(page.text)
    assert "Connect Tracker" in text and "Settings, API keys" in text and 'type="password"' in page.text
    # A wrong key: refused by the resource, the form again, nothing stored, the key not echoed.
    r = b.submit(link, form, {"key": WRONG_KEY, "label": "work"})
    assert r.status_code == 400 and "Tracker did not accept this key" in text_of(r.text), text_of(r.text)[:400]
    assert WRONG_KEY not in r.text and 'value="work"' in r.text
    assert connections(e) == []
    # The right key, pasted with stray whitespace: connected, named by the resource's answer.
    form = next(f for f in forms_of(r.text) if "key" in f.fields)
    r = b.submit(link, form, {"key": f"  {ADA_KEY}\n", "label": "work"})
    assert r.status_code == 200 and "Your Tracker account ada is connected" in text_of(r.text), text_of(r.text)
    assert ADA_KEY not in r.text
    [(resource, account, binding, sealed, refresh, expires)] = connections(e)
    assert (resource, account, binding, refresh, expires) == ("tracker", "ada", "user", None, None)
    assert ADA_KEY not in sealed
    # The retry reaches the service with the key in its header.
    result = call_tool(e.d, alice, "tracker_whoami")
    assert result_text(result) == "ada", result
    mcp_seen = [s for s in seen(e.tracker) if s["path"] == "/mcp" and s["login"] == "ada"]
    assert mcp_seen and all(s["via"] == "header" and not s["stray"] for s in mcp_seen), mcp_seen
    # The link is spent; the key appears in no page, log line or listing.
    assert b.get(link).status_code == 400
    listed = subprocess.run([str(DOORMAN_BIN), "connections", "list", "--json", "--config", str(e.d.config)],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(listed.stdout)[0]["account"] == "ada" and ADA_KEY not in listed.stdout
    assert ADA_KEY not in e.d.log() and WRONG_KEY not in e.d.log()
    connections_page = b.get(f"{e.d.base}/connections").text
    assert "ada" in connections_page and ADA_KEY not in connections_page
    # Disconnecting deletes it here; there is nothing to revoke at a key-only service, so
    # nothing is queued (and nothing retried for ever).
    from test_console import post_form
    conn_id = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True).execute(
        "SELECT id FROM connections WHERE resource = 'tracker'").fetchone()[0]
    r = post_form(b, f"{e.d.base}/connections", "/connections/disconnect", {"id": conn_id})
    assert r.status_code == 200 and "Disconnected your Tracker account ada" in text_of(r.text), text_of(r.text)[:300]
    assert [c for c in connections(e) if c[0] == "tracker"] == []
    db = sqlite3.connect(f"file:{e.d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    assert db.execute("SELECT COUNT(*) FROM pending_revocations").fetchone() == (0,)
    assert "revocation at the resource failed" not in e.d.log()


def test_a_key_in_the_query_with_a_post_check_and_the_label_as_the_account(env):
    e = env
    bob, _ = local_token(e, "bob")
    link = connect_link(e, bob, "ledger_whoami")
    b, _, form = key_form(e, "bob", link)
    r = b.submit(link, form, {"key": BOB_KEY, "label": "bob's ledger"})
    assert r.status_code == 200 and "account bob's ledger is connected" in text_of(r.text), text_of(r.text)
    assert result_text(call_tool(e.d, bob, "ledger_whoami")) == "bob"
    mcp_seen = [s for s in seen(e.ledger) if s["path"] == "/mcp" and s["login"] == "bob"]
    assert mcp_seen and all(s["via"] == "query" and not s["stray"] for s in mcp_seen), mcp_seen
    assert BOB_KEY not in e.d.log()


def test_another_persons_link_a_forged_form_and_an_empty_key_store_nothing(env):
    e = env
    alice, _ = local_token(e, "alice")
    local_token(e, "root")
    link = connect_link(e, alice, "ledger_whoami")
    before = connections(e)
    # Another signed-in person posting to alice's link.
    _, _, form = key_form(e, "alice", link)
    root = e.browser("root")
    page = root.get(link)
    assert page.status_code == 403
    csrf_root = root.get(f"{e.d.base}/connections")
    root_form = next(f for f in forms_of(csrf_root.text) if "csrf" in f.fields)
    r = root.http.post(f"{e.d.base}/connect/ledger", data={
        "csrf": root_form.fields["csrf"], "prompt": form.fields["prompt"], "key": BOB_KEY})
    assert r.status_code == 403, r.text[:300]
    # No CSRF token.
    b = e.browser("alice")
    r = b.http.post(f"{e.d.base}/connect/ledger", data={"prompt": form.fields["prompt"], "key": BOB_KEY})
    assert r.status_code == 400 and "Form expired" in r.text
    # An empty key.
    r = b.submit(link, form, {"key": "   "})
    assert r.status_code == 400 and "Paste the key" in text_of(r.text)
    assert connections(e) == before
