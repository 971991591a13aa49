"""One decision for every upstream-bound request (issue 14), end to end:

- an upstream denied to a group by a tools policy (`tools = ["*"], upstreams = ["crm"]`) is
  denied to it for every method: prompts, resources (read, subscribe), completions, and hidden
  from every list; the people in the group still get all of it;
- step-up (RFC 9470) holds for prompts as for tools, and inside a 2025-03-26 JSON-RPC batch,
  where the whole batch is answered `401` and nothing in it reaches an upstream;
- a person whose groups cannot be read is denied, with a clear error and an audit record;
- each request is recorded once, in batches too;
- the Python MCP SDK client that simply runs OAuth again after the step-up `401` gets a fresh
  sign-in and its call completes.

Real peers: `oidc-provider` (tests/peers/idp.mjs) as the company's SSO with groups,
server-everything as the "crm" upstream, the Python SDK fixture as "py", the Python MCP SDK.
"""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

import oauth
from conftest import ACCEPT_BOTH
from idp import account, idp_client, start_idp
from oauth import advance_clock, pkce, query_of
from procs import free_port
from test_layer2 import PASSWORD
from test_oauth_clients import HeadlessPerson, MemoryStorage
from test_policy_audit import (POLICIES, assert_step_up_challenge, audit_envs, local_token, mcp_post, result_text,
                               trace_id, traceparent, wait_rows)
from test_sso import CLIENT as SSO_CLIENT
from test_sso import REDIRECT as SSO_REDIRECT
from test_sso import SECRET as SSO_SECRET
from test_sso import authorization_url as sso_authorization_url
from test_sso import provider_toml, sso_walk

pytestmark = pytest.mark.timeout(300)
__all__ = ["audit_envs"]  # the fixture, shared with test_policy_audit

SALES = account("pat", "pat-at-corp", sub="00u-pat", email="pat@example.com", name="Pat Sales",
                groups=["sales", "mcp-users"])
ENGINEER = account("alice", "alice-at-corp", sub="00u-alice", email="alice@example.com", name="Alice Example",
                   groups=["engineering", "mcp-users"])
SUPPORT = account("sam", "sam-at-corp", sub="00u-sam", email="sam@example.com", name="Sam Support",
                  groups=["support", "mcp-users"])
PASSWORDS = {"pat": "pat-at-corp", "alice": "alice-at-corp", "sam": "sam-at-corp"}

CRM_POLICIES = """
[[policies]]
name = "crm-sales"
tools = ["*"]
upstreams = ["crm"]
allow_groups = ["sales"]
"""


def audit_rows(d) -> list[dict]:
    db = sqlite3.connect(f"file:{d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit_events ORDER BY id")]
    finally:
        db.close()


@pytest.fixture(scope="module")
def crm_env(everything, py_upstream):
    port = free_port()
    idp = start_idp([idp_client("doorman", SSO_SECRET, [f"http://127.0.0.1:{port}/sign-in/callback"])],
                    [SALES, ENGINEER, SUPPORT], name="od-sso-idp")
    try:
        d = oauth.accounts_doorman("od-crm", [{"name": "crm", "url": everything.url},
                                              {"name": "py", "url": py_upstream.url}], port=port,
                                   sign_in={"local_accounts": False},
                                   extra_toml=provider_toml(idp.issuer) + CRM_POLICIES,
                                   env={"CORP_OIDC_SECRET": SSO_SECRET})
    except BaseException:
        idp.stop()
        raise
    s = SimpleNamespace(d=d, idp=idp)
    yield s
    d.stop()
    idp.stop()


def sso_sign_in(s, who: str) -> str:
    """Signs `who` in through the company provider (a fresh browser) for the SSO test client;
    returns the access token."""
    verifier, challenge = pkce()
    with httpx2.Client(timeout=30, follow_redirects=False) as browser:
        r = sso_walk(s, browser, sso_authorization_url(s.d, challenge), who, PASSWORDS[who])
    assert r.status_code == 303, (r.status_code, r.text[:500])
    q = query_of(r.headers["location"])
    t = httpx2.post(f"{s.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": SSO_REDIRECT,
        "code_verifier": verifier, "client_id": SSO_CLIENT}, timeout=30)
    assert t.status_code == 200, t.text
    return t.json()["access_token"]


def listed(d, token: str, method: str, key: str, field: str) -> set[str]:
    r = mcp_post(d, token, method)
    assert r.status_code == 200, r.text
    return {x[field] for x in r.json()["result"][key]}


def open_session(d, token: str, version: str = "2025-11-25") -> dict:
    """A stateful session opened with the bearer token; returns the headers for its requests."""
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx2.post(d.url, headers={**ACCEPT_BOTH, **auth}, timeout=30, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
    assert r.status_code == 200, r.text
    h = {**ACCEPT_BOTH, **auth, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": version}
    n = httpx2.post(d.url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, timeout=30)
    assert n.status_code == 202, n.text
    return h


def rpc(d, headers: dict, method: str, params: dict | None = None, rid: int = 2) -> dict:
    r = httpx2.post(d.url, headers={**headers, "accept": "application/json"}, timeout=30,
                    json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()


def test_an_upstream_denied_to_a_group_is_denied_for_every_method_and_hidden_in_every_list(crm_env):
    d = crm_env.d
    pat, alice = sso_sign_in(crm_env, "pat"), sso_sign_in(crm_env, "alice")

    # Pat (sales) sees everything crm offers; alice (engineering) sees none of it, in any list.
    lists = [("tools/list", "tools", "name"), ("prompts/list", "prompts", "name"),
             ("resources/list", "resources", "uri"), ("resources/templates/list", "resourceTemplates", "uriTemplate")]
    pats = {m: listed(d, pat, m, k, f) for m, k, f in lists}
    alices = {m: listed(d, alice, m, k, f) for m, k, f in lists}
    for m, _, _ in lists:
        crm_items = {x for x in pats[m] if x.startswith(("crm_", "crm+"))}
        assert crm_items, (m, pats[m])
        assert not {x for x in alices[m] if x.startswith(("crm_", "crm+"))}, (m, alices[m])
    assert "py_add" in alices["tools/list"] and "py_greet" in alices["prompts/list"], alices
    assert "py+fixture://readme" in alices["resources/list"], alices

    prompt = sorted(x for x in pats["prompts/list"] if x.startswith("crm_"))[0]
    resource = sorted(x for x in pats["resources/list"] if x.startswith("crm+"))[0]
    template = sorted(x for x in pats["resources/templates/list"] if x.startswith("crm+"))[0]

    # Pat may use them all.
    r = mcp_post(d, pat, "resources/read", {"uri": resource}, name=resource)
    assert "result" in r.json() and r.json()["result"]["contents"], r.text
    r = mcp_post(d, pat, "prompts/get", {"name": "crm_simple-prompt"}, name="crm_simple-prompt")
    assert "result" in r.json(), r.text

    # Alice is refused every one, with the policy named, and each refusal recorded once.
    refusals = {
        "resources/read": ({"uri": resource}, resource),
        "prompts/get": ({"name": prompt, "arguments": {}}, prompt),
        "completion/complete": ({"ref": {"type": "ref/resource", "uri": template},
                                 "argument": {"name": "resourceId", "value": "1"}}, None),
        "tools/call": ({"name": "crm_echo", "arguments": {"message": "hi"}}, "crm_echo"),
    }
    for method, (params, name) in refusals.items():
        trace = trace_id()
        r = mcp_post(d, alice, method, params, name=name, traceparent=traceparent(trace))
        body = r.json()
        if method == "tools/call":
            assert body["result"]["isError"] is True, body
            assert result_text(body["result"]) == 'Doorman policy "crm-sales" does not allow you to call crm_echo.'
        else:
            assert body["error"]["code"] == -32012 and body["error"]["data"]["policy"] == "crm-sales", (method, body)
        rows = wait_rows(d, lambda row, t=trace: row["request_id"] == t)
        assert [(x["event"], x["decision"], x["policy"], x["upstream"]) for x in rows] == \
            [(method, "denied", "crm-sales", "crm")], (method, rows)

    # Subscriptions on a stateful session: refused by name, and a bare URI reaches no crm.
    h = open_session(d, alice)
    sub = rpc(d, h, "resources/subscribe", {"uri": resource})
    assert sub["error"]["code"] == -32012 and sub["error"]["data"]["policy"] == "crm-sales", sub
    bare = resource.split("+", 1)[1]
    sub = rpc(d, h, "resources/subscribe", {"uri": bare}, rid=3)
    assert "error" in sub, sub
    assert sub["error"]["code"] != -32012, "the bare URI is not denied, it is just not on any allowed upstream"
    h_pat = open_session(d, pat)
    ok = rpc(d, h_pat, "resources/subscribe", {"uri": resource})
    assert ok.get("result") == {}, ok
    # A completion for a crm prompt, allowed to pat.
    comp = rpc(d, h_pat, "completion/complete", {"ref": {"type": "ref/resource", "uri": template},
                                                 "argument": {"name": "resourceId", "value": "1"}}, rid=4)
    assert "result" in comp and "completion" in comp["result"], comp


def test_a_person_whose_groups_cannot_be_read_is_denied(crm_env):
    d = crm_env.d
    sam = sso_sign_in(crm_env, "sam")  # never called before: nothing cached for sam
    db = sqlite3.connect(d.dir / "data" / "doorman.db", timeout=10)
    try:
        db.execute("UPDATE users SET groups = 'not a JSON list' WHERE subject = '00u-sam'")
        db.commit()
    finally:
        db.close()
    # Even on py, which no policy restricts: what cannot be determined is denied.
    for method, params, name in [("tools/call", {"name": "py_add", "arguments": {"a": 1, "b": 2}}, "py_add"),
                                 ("prompts/get", {"name": "py_greet", "arguments": {"name": "S"}}, "py_greet"),
                                 ("resources/read", {"uri": "py+fixture://readme"}, "py+fixture://readme")]:
        trace = trace_id()
        r = mcp_post(d, sam, method, params, name=name, traceparent=traceparent(trace))
        err = r.json().get("error")
        assert err and err["code"] == -32012 and err["data"]["reason"] == "access_undetermined", (method, r.text)
        assert "could not check" in err["message"] and "not a JSON" not in err["message"], err
        [row] = wait_rows(d, lambda row, t=trace: row["request_id"] == t)
        assert row["decision"] == "denied" and row["detail"] == "the person's groups could not be read", row
    # Lists hide everything from a person who cannot be decided.
    assert not {t for t in listed(d, sam, "tools/list", "tools", "name") if not t.startswith("doorman_")}


# ---------------------------------------------------------------------------------------------
# Step-up everywhere, and one audit record per request (local accounts, Doorman's test clock)

STEP_UP_POLICIES = POLICIES.replace('tools = ["py_greet"]\nallow_people = ["root"]',
                                    'prompts = ["py_greet"]\nsign_in_max_age = "5m"')
assert STEP_UP_POLICIES != POLICIES


def test_prompts_step_up_as_tools_do(audit_envs):
    e = audit_envs("od-stepup-prompt", extra=STEP_UP_POLICIES)
    d = e.d
    token, _ = local_token(e, "alice")
    greet = mcp_post(d, token, "prompts/get", {"name": "py_greet", "arguments": {"name": "A"}}, name="py_greet")
    assert "result" in greet.json(), greet.text
    advance_clock(d, 400)  # older than the prompt policy's 5 minutes
    r = mcp_post(d, token, "prompts/get", {"name": "py_greet", "arguments": {"name": "A"}}, name="py_greet")
    assert_step_up_challenge(d, r, 300)
    assert len(wait_rows(d, lambda x: x["decision"] == "step_up_required" and x["name"] == "py_greet")) == 1
    # On a stateful session too.
    h = open_session(d, token)
    r = httpx2.post(d.url, headers={**h, "accept": "application/json"}, timeout=30, json={
        "jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "py_greet", "arguments": {"name": "A"}}})
    assert_step_up_challenge(d, r, 300)


def test_step_up_holds_inside_batches_and_each_call_is_recorded_once(audit_envs):
    e = audit_envs("od-stepup-batch")
    d = e.d
    token, _ = local_token(e, "alice")
    h = open_session(d, token, "2025-03-26")

    def batch(messages: list[dict]) -> httpx2.Response:
        return httpx2.post(d.url, headers={**h, "accept": "application/json, text/event-stream"}, json=messages,
                           timeout=60)

    def add(rid: int) -> dict:
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": "py_add", "arguments": {"a": rid, "b": 1}}}

    def progress(rid: int) -> dict:
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": "py_progress", "arguments": {"steps": 1}}}

    def count(name: str, decision: str) -> int:
        return sum(1 for r in audit_rows(d) if r["name"] == name and r["decision"] == decision)

    # Fresh: a batch runs, each call recorded exactly once.
    r = batch([add(1), progress(2), add(3), {"jsonrpc": "2.0", "id": 4, "method": "ping"}])
    assert r.status_code == 200, r.text
    replies = {m["id"]: m for m in r.json()}
    assert result_text(replies[1]["result"]) == "2" and result_text(replies[3]["result"]) == "4", replies
    assert wait_rows(d, lambda x: x["name"] == "py_add", count=2) and count("py_add", "allowed") == 2
    assert count("py_progress", "allowed") == 1

    advance_clock(d, 400)  # older than the 5 minutes py_progress's policy asks for
    # The step-up inside a batch: the whole batch is refused with the RFC 9470 challenge, and
    # nothing in it reaches the upstream (py_add is not run either).
    r = batch([add(5), progress(6)])
    assert_step_up_challenge(d, r, 300)
    rows = wait_rows(d, lambda x: x["decision"] == "step_up_required" and x["name"] == "py_progress")
    assert len(rows) == 1, rows
    assert count("py_add", "allowed") == 2, "nothing in a refused batch runs"
    # Alone, the same call gets the same challenge.
    assert_step_up_challenge(d, mcp_post(d, token, "tools/call", {"name": "py_progress", "arguments": {"steps": 1}},
                                         name="py_progress"), 300)
    # What the policies don't cover still runs in a batch, each once.
    r = batch([add(7), add(8)])
    assert r.status_code == 200 and [result_text(m["result"]) for m in r.json()] == ["8", "9"], r.text
    assert len(wait_rows(d, lambda x: x["name"] == "py_add", count=4)) == 4


def test_the_python_sdk_reruns_oauth_after_the_step_up_and_its_call_completes(audit_envs):
    """The SDK treats the 401 like any other: it runs its OAuth flow again (no max_age in it).
    Doorman remembered the step-up for this person and client, so the person signs in again
    although their browser is signed in, and the SDK's retry of the call succeeds."""
    e = audit_envs("od-sdk-stepup")
    d = e.d
    person = HeadlessPerson(d, "alice", PASSWORD)
    storage = MemoryStorage()
    metadata = OAuthClientMetadata(redirect_uris=["http://127.0.0.1:5173/callback"], client_name="Step-up SDK client",
                                   token_endpoint_auth_method="none",
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"])
    provider = OAuthClientProvider(d.url, metadata, storage, redirect_handler=person.redirect_handler,
                                   callback_handler=person.callback_handler)
    statuses: list[tuple[str, int]] = []

    async def on_response(r: httpx2.Response) -> None:
        statuses.append((r.request.url.path, r.status_code))

    async def run():
        http = httpx2.AsyncClient(auth=provider, timeout=60, event_hooks={"response": [on_response]})
        with anyio.fail_after(180):
            async with http, Client(streamable_http_client(d.url, http_client=http)) as c:
                first = await c.call_tool("py_progress", {"steps": 1})
                assert not first.is_error and "done 1" in first.content[0].text, first
                await anyio.to_thread.run_sync(advance_clock, d, 400)
                again = await c.call_tool("py_progress", {"steps": 1})
                assert not again.is_error and "done 1" in again.content[0].text, again

    try:
        anyio.run(run)
    finally:
        person.close()
    assert len(person.authorization_urls) == 2, person.authorization_urls
    assert "max_age" not in person.authorization_urls[1], "the SDK does not carry max_age"
    assert "/sign-in" in person.pages_seen[0] and "/sign-in" in person.pages_seen[1], person.pages_seen
    assert ("/mcp", 401) in statuses, statuses
    rows = wait_rows(d, lambda r: r["name"] == "py_progress", count=3)
    assert [r["decision"] for r in rows] == ["allowed", "step_up_required", "allowed"], rows
