"""Policy and audit (issue 6) end to end: who may call which tool (`[[policies]]` by people and
by the groups a company's provider puts in its tokens, `[access] default`), RFC 9470 step-up
(`insufficient_user_authentication`, then a forced fresh sign-in through `max_age`), the audit
trail (its rows, its JSON log lines, `doorman audit`, redacted arguments, retention), `/metrics`,
`/readyz`, W3C `traceparent` towards upstreams, and the `/activity` and `/admin/audit` pages in
real headless Chromium.

Real peers only: `oidc-provider` (tests/peers/idp.mjs) as the company's SSO provider and as the
authorization server of a layer-2 resource, the resource's MCP server (tests/peers/
resource_upstream.py), the Python SDK fixture and server-everything as upstreams, the Python MCP
SDK as a client. A small raw-JSON-RPC upstream defined here records the headers it receives (no
fixture echoes headers), in both protocol generations.

The retention test sets `server.purge_interval` to one second, so it waits seconds, not minutes.

Screenshots land in tests/artifacts/policy-audit/.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import urlencode, urljoin, urlparse

import anyio
import httpx2
import pytest

import browser
import oauth
from browser import CHROMIUM, LoopbackSite, run_browser
from conftest import DOORMAN_BIN, modern_headers, modern_request
from idp import account, idp_client, resource_server, start_idp
from oauth import Browser, add_user, advance_clock, forms_of, pkce, query_of, www_authenticate
from procs import ARTIFACTS, free_port
from resource_peers import start_resource_upstream
from test_layer2 import (CLIENT_REDIRECT, IDP_ACCOUNTS, NOTES_SECRET, PASSWORD, Env, client, cli,
                         connection_rows, follow_connect, link_in)
from test_layer2_browser import browser_client, by_label, sign_in_steps
from test_sso import CLIENT as SSO_CLIENT
from test_sso import REDIRECT as SSO_REDIRECT
from test_sso import SECRET as SSO_SECRET
from test_sso import authorization_url as sso_authorization_url
from test_sso import claims_of, people, provider_toml, sso_walk

pytestmark = pytest.mark.timeout(300)

POLICY_ARTIFACTS = ARTIFACTS / "policy-audit"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


# ---------------------------------------------------------------------------------------------
# Helpers: raw MCP requests, the audit table, the CLI, metrics


def mcp_post(d, token: str | None, method: str, params: dict | None = None, *, name: str | None = None,
             traceparent: str | None = None, caps: dict | None = None) -> httpx2.Response:
    """One stateless 2026-07-28 request to Doorman's /mcp with raw HTTP."""
    h = modern_headers(method, name)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if traceparent is not None:
        h["traceparent"] = traceparent
    body = modern_request(method, params)
    if caps is not None:
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps
    return httpx2.post(d.url, headers=h, json=body, timeout=60)


def call_tool(d, token: str, tool: str, args: dict | None = None, **kw) -> dict:
    """tools/call; the result (asserting a 200 with a result)."""
    r = mcp_post(d, token, "tools/call", {"name": tool, "arguments": args or {}}, name=tool, **kw)
    assert r.status_code == 200, (r.status_code, r.headers.get("www-authenticate"), r.text[:500])
    body = r.json()
    assert "result" in body, body
    return body["result"]


def result_text(result: dict) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")


def list_tool_names(d, token: str) -> set[str]:
    r = mcp_post(d, token, "tools/list")
    assert r.status_code == 200, r.text
    return {t["name"] for t in r.json()["result"]["tools"]}


def audit_rows(d) -> list[dict]:
    """Every row of audit_events, oldest first (read-only, straight from the SQLite file)."""
    db = sqlite3.connect(f"file:{d.dir / 'data' / 'doorman.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit_events ORDER BY id")]
    finally:
        db.close()


def wait_rows(d, pred, count: int = 1, timeout: float = 10.0) -> list[dict]:
    """Polls until at least `count` rows satisfy `pred` (records are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in audit_rows(d) if pred(r)]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def one_row(d, **where) -> dict:
    """The single row whose columns equal `where` (waits for it to be written)."""
    rows = wait_rows(d, lambda r: all(r.get(k) == v for k, v in where.items()))
    assert len(rows) == 1, (where, rows, [(r["event"], r["name"], r["decision"]) for r in audit_rows(d)])
    return rows[0]


def audit_cli(d, *args: str) -> list[dict]:
    out = subprocess.run([str(DOORMAN_BIN), "audit", *args, "--json", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def trace_id() -> str:
    return secrets.token_hex(16)


def traceparent(trace: str) -> str:
    return f"00-{trace}-{secrets.token_hex(8)}-01"


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One scrape of /metrics, parsed from the text exposition format (OpenMetrics 1.0)."""

    def __init__(self, text: str):
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(" ", 3)
                self.types[family] = kind
                continue
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.groups()
            key = (name, frozenset((k, bytes(v, "utf-8").decode("unicode_escape")) for k, v in _LABEL.findall(labels or "")))
            assert key not in self.samples, f"duplicate sample {line!r}"
            self.samples[key] = float(value)

    def get(self, name: str, **labels) -> float:
        """A sample's value (0 when absent: counters start there)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def having(self, name: str, **labels) -> dict[frozenset, float]:
        """Every sample of `name` whose labels include `labels`."""
        want = set(labels.items())
        return {ls: v for (n, ls), v in self.samples.items() if n == name and want <= set(ls)}


def scrape(d) -> Scrape:
    r = httpx2.get(f"{d.base}/metrics", timeout=10)  # no token: operators' scrapers have none
    assert r.status_code == 200, r.text
    ctype = r.headers["content-type"]
    assert ctype.startswith("application/openmetrics-text") or ctype.startswith("text/plain"), ctype
    assert r.text.rstrip().endswith("# EOF"), r.text[-200:]
    return Scrape(r.text)


def json_audit_lines(d) -> list[dict]:
    """The JSON log lines of target doorman::audit in the Doorman's log."""
    out = []
    for line in d.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("target") == "doorman::audit":
            out.append({**obj.get("fields", {}), **obj})
    return out


def person_ids(d) -> dict[str, str]:
    """username or email -> Doorman id."""
    out = {}
    for p in people(d):
        for k in ("username", "email"):
            if p.get(k):
                out[p[k]] = p["id"]
    return out


# ---------------------------------------------------------------------------------------------
# A Doorman in accounts mode with a layer-2 resource (notes), the Python SDK fixture (py) and
# server-everything (everything), local people alice, bob and an administrator, root.

POLICIES = """
[[policies]]
name = "audited-echo"
tools = ["everything_echo"]
log_arguments = true

[[policies]]
name = "no-writes-for-bob"
tools = ["notes_write_*"]
deny_people = ["bob"]

[[policies]]
name = "fresh-sign-in"
tools = ["py_progress"]
sign_in_max_age = "5m"

[[policies]]
name = "greeting-for-root"
tools = ["py_greet"]
allow_people = ["root"]

[[policies]]
tools = ["py_slow"]
deny_people = ["bob@corp.example"]
"""


def start_audit_env(name: str, upstreams: list[dict], *, extra: str = POLICIES, server: dict | None = None,
                    env: dict | None = None, port: int | None = None) -> Env:
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    notes_port = free_port()
    audience = f"http://127.0.0.1:{notes_port}/mcp"
    idp = start_idp(
        clients=[idp_client("doorman-notes", NOTES_SECRET, [f"{base}/connect/callback"])],
        accounts=[account(u, pw, email=email) for u, (pw, email) in IDP_ACCOUNTS.items()],
        resource_server=resource_server(audience, access_token_ttl=600, always_refresh=True),
        name=f"{name}-idp")
    notes = None
    try:
        notes = start_resource_upstream(notes_port, idp.issuer, audience, name=f"{name}-notes")
        toml = f"""
[[resources]]
name = "notes"
display_name = "Notes"
issuer = "{idp.issuer}"
client_id = "doorman-notes"
client_secret_env = "NOTES_SECRET"
scopes = ["openid", "email", "notes:read", "notes:write"]
identity = {{ id_token_claim = "email" }}
binding = "user"

[[sign_in.clients]]
client_id = "tester"
name = "Tester"
redirect_uris = ["{CLIENT_REDIRECT}"]
""" + extra
        d = oauth.accounts_doorman(name, [{"name": "notes", "url": notes.url, "resource": "notes"}, *upstreams],
                                   extra_toml=toml, env={"NOTES_SECRET": NOTES_SECRET, **(env or {})}, port=port,
                                   server={"session_idle_timeout": "1d", **(server or {})})
    except BaseException:
        if notes is not None:
            notes.stop()
        idp.stop()
        raise
    e = Env(d, idp, notes)
    add_user(d, "alice", PASSWORD, email="alice@corp.example")
    add_user(d, "bob", PASSWORD, email="bob@corp.example")
    add_user(d, "root", PASSWORD, admin=True, email="root@corp.example")
    return e


@pytest.fixture
def audit_envs(py_upstream, everything):
    started: list[Env] = []

    def start(name: str, upstreams: list[dict] | None = None, **kw) -> Env:
        ups = upstreams if upstreams is not None else [{"name": "py", "url": py_upstream.url},
                                                       {"name": "everything", "url": everything.url}]
        e = start_audit_env(name, ups, **kw)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


def local_token(e: Env, user: str, **extra) -> tuple[str, list[str]]:
    """Signs `user` in at Doorman through its real pages in their browser (kept per person, so
    its cookie is reused) for the "tester" client; `extra` goes into the authorization request
    (e.g. max_age). Returns (access token, URLs of the Doorman pages this flow showed)."""
    b = e.browser(user)
    before = len(b.pages)
    verifier, challenge = pkce()
    q = {"response_type": "code", "client_id": "tester", "redirect_uri": CLIENT_REDIRECT, "scope": "mcp",
         "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_urlsafe(8),
         "resource": e.d.url, **extra}
    loc = b.authorize(f"{e.d.base}/oauth/authorize?{urlencode(q)}", user, PASSWORD)
    code = query_of(loc)["code"][0]
    r = httpx2.post(f"{e.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": CLIENT_REDIRECT, "client_id": "tester", "resource": e.d.url}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"], [str(p.url) for p in b.pages[before:]]


def connect_notes(e: Env, token: str, user: str = "alice") -> None:
    """Gets a connect link for notes (text form) and completes it as alice-work at the resource."""
    first = call_tool(e.d, token, "notes_whoami")
    assert first["isError"] is True, first
    page = follow_connect(e, user, link_in(result_text(first)))
    assert page.status_code == 200 and "Notes is connected" in page.text, page.text[:300]


def signed_in_pages(urls: list[str]) -> list[str]:
    return [u for u in urls if urlparse(u).path == "/sign-in"]


# ---------------------------------------------------------------------------------------------
# Policies by groups from the company's SSO provider (SSO only: no local accounts)

ALICE = account("alice", "alice-at-corp", sub="00u-alice", email="alice@example.com", name="Alice Example",
                groups=["engineering", "mcp-users"])
IVAN = account("ivan", "ivan-at-corp", sub="00u-ivan", email="ivan@example.com", name="Ivan Intern",
               groups=["engineering", "interns", "mcp-users"])
PAT = account("pat", "pat-at-corp", sub="00u-pat", email="pat@example.com", name="Pat Sales",
              groups=["sales", "mcp-users"])
SSO_PASSWORDS = {"alice": "alice-at-corp", "ivan": "ivan-at-corp", "pat": "pat-at-corp"}
STEP_UP_SECONDS = 6  # real seconds: the provider's auth_time is on the real clock

SSO_POLICIES = f"""
[access]
default = "deny"

[[policies]]
name = "engineering-only"
tools = ["py_add"]
allow_groups = ["engineering"]
deny_groups = ["interns"]

[[policies]]
name = "fresh-sign-in"
tools = ["py_progress"]
allow_groups = ["engineering"]
sign_in_max_age = "{STEP_UP_SECONDS}s"

[[policies]]
name = "no-greetings-for-interns"
tools = ["py_greet"]
deny_groups = ["interns"]

[[policies]]
name = "logging"
tools = ["py_log"]
deny_people = ["pat@example.com"]
"""


@pytest.fixture(scope="module")
def sso_env(py_upstream):
    port = free_port()
    idp = start_idp([idp_client("doorman", SSO_SECRET, [f"http://127.0.0.1:{port}/sign-in/callback"])],
                    [ALICE, IVAN, PAT], name="pa-sso-idp")
    try:
        d = oauth.accounts_doorman("pa-sso", [{"name": "py", "url": py_upstream.url}], port=port,
                                   sign_in={"local_accounts": False},
                                   extra_toml=provider_toml(idp.issuer) + SSO_POLICIES,
                                   env={"CORP_OIDC_SECRET": SSO_SECRET})
    except BaseException:
        idp.stop()
        raise
    s = SimpleNamespace(d=d, idp=idp)
    yield s
    d.stop()
    idp.stop()


def sso_token(s, who: str, http: httpx2.Client | None = None, **extra) -> tuple[str, list[str]]:
    """Signs `who` in through the provider for the SSO test client; `http` is their browser (a
    fresh one unless given). Returns (access token, every URL the browser requested)."""
    seen: list[str] = []
    own = http is None
    if own:
        http = httpx2.Client(timeout=30, follow_redirects=False)
    hooks = http.event_hooks
    hook = lambda req: seen.append(f"{req.method} {req.url}")  # noqa: E731
    http.event_hooks = {**hooks, "request": [*hooks.get("request", []), hook]}
    try:
        verifier, challenge = pkce()
        r = sso_walk(s, http, sso_authorization_url(s.d, challenge, **extra), who, SSO_PASSWORDS[who])
    finally:
        http.event_hooks = hooks
        if own:
            http.close()
    assert r.status_code == 303, (r.status_code, r.text[:500])
    q = query_of(r.headers["location"])
    assert "code" in q, r.headers["location"]
    t = httpx2.post(f"{s.d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": SSO_REDIRECT,
        "code_verifier": verifier, "client_id": SSO_CLIENT}, timeout=30)
    assert t.status_code == 200, t.text
    return t.json()["access_token"], seen


def test_groups_from_the_provider_decide_which_tools_each_person_sees_and_calls(sso_env):
    d = sso_env.d
    alice, _ = sso_token(sso_env, "alice")
    ivan, _ = sso_token(sso_env, "ivan")
    pat, _ = sso_token(sso_env, "pat")
    by_person = {p["email"]: p for p in people(d)}
    assert by_person["ivan@example.com"]["groups"] == ["engineering", "interns", "mcp-users"]

    # Each person is shown only the tools they may call; py_slow matches no policy: default deny.
    seen = {who: {t for t in list_tool_names(d, tok) if t.startswith("py_")}
            for who, tok in (("alice", alice), ("ivan", ivan), ("pat", pat))}
    assert seen["alice"] == {"py_add", "py_progress", "py_log"}, seen
    assert seen["ivan"] == {"py_progress", "py_log"}, seen  # deny_groups wins over allow_groups
    assert seen["pat"] == set(), seen  # not in engineering; denied by email; default deny
    # Doorman's own tools are always allowed, even under default deny.
    assert "doorman_whoami" in list_tool_names(d, pat)
    me = call_tool(d, pat, "doorman_whoami")
    assert me.get("isError") is not True and "pat@example.com" in json.dumps(me), me

    # The passing twin: an engineer calls py_add.
    ok = call_tool(d, alice, "py_add", {"a": 2, "b": 40})
    assert ok.get("isError") is not True and result_text(ok) == "42", ok

    # Denied calls are tool errors naming the policy (a model can read them), not protocol errors.
    for tok, tool, policy in [(ivan, "py_add", "engineering-only"),       # intern: denied by group
                              (pat, "py_add", "engineering-only"),        # not in an allowed group
                              (pat, "py_log", "logging"),                 # denied by email
                              (alice, "py_slow", "default")]:             # no policy: default deny
        r = call_tool(d, tok, tool, {"seconds": 0} if tool == "py_slow" else {"a": 1, "b": 1, "message": "x"})
        assert r["isError"] is True, r
        assert result_text(r) == f'Doorman policy "{policy}" does not allow you to call {tool}.', r

    logged = call_tool(d, ivan, "py_log", {"message": "hello"})
    assert logged.get("isError") is not True, logged

    # Prompts follow the same policies: a JSON-RPC error -32012 naming the policy.
    r = mcp_post(d, ivan, "prompts/get", {"name": "py_greet", "arguments": {"name": "Ivan"}}, name="py_greet")
    err = r.json()["error"]
    assert err["code"] == -32012 and err["data"]["policy"] == "no-greetings-for-interns", err
    assert "py_greet" in err["message"], err
    r = mcp_post(d, alice, "prompts/get", {"name": "py_greet", "arguments": {"name": "Alice"}}, name="py_greet")
    got = r.json()["result"]
    assert "Hello, Alice!" in json.dumps(got), got

    # The refusals are in the audit, with the policy that decided.
    ivan_id = by_person["ivan@example.com"]["id"]
    row = one_row(d, person_id=ivan_id, name="py_add", event="tools/call")
    assert row["decision"] == "denied" and row["policy"] == "engineering-only" and row["outcome"] is None, row
    assert row["person"] == "ivan@example.com" and row["client_id"] == SSO_CLIENT, row
    row = one_row(d, person_id=ivan_id, name="py_greet")
    assert row["event"] == "prompts/get" and row["decision"] == "denied", row
    assert row["policy"] == "no-greetings-for-interns", row
    row = one_row(d, person_id=by_person["alice@example.com"]["id"], name="py_slow")
    assert row["decision"] == "denied" and row["policy"] == "default", row
    row = one_row(d, person_id=by_person["alice@example.com"]["id"], name="py_add")
    assert row["decision"] == "allowed" and row["policy"] == "engineering-only" and row["outcome"] == "success", row

    # Signing in through the provider is a security event naming the person (email).
    (sign_in,) = wait_rows(d, lambda r: r["event"] == "sign_in" and r["person_id"] == ivan_id)
    assert sign_in["kind"] == "security", sign_in
    assert sign_in["person"] == "ivan@example.com", f"SSO sign-in record without the person's email: {sign_in}"


# ---------------------------------------------------------------------------------------------
# RFC 9470 step-up


def assert_step_up_challenge(d, r: httpx2.Response, max_age: int) -> None:
    assert r.status_code == 401, (r.status_code, r.text[:300])
    scheme, params = www_authenticate(r.headers["www-authenticate"])
    assert scheme == "Bearer", r.headers["www-authenticate"]
    assert params["error"] == "insufficient_user_authentication", params
    assert params["error_description"] == "A more recent sign-in is required", params
    assert params["max_age"] == str(max_age), params
    assert params["resource_metadata"] == f"{d.base}/.well-known/oauth-protected-resource/mcp", params
    err = r.json()["error"]
    assert err["code"] == -32012 and err["data"]["max_age"] == max_age, err


def test_step_up_challenge_then_a_forced_fresh_sign_in(audit_envs):
    """RFC 9470 §3: a token whose sign-in is too old for the tool's policy gets 401 with
    insufficient_user_authentication and max_age. Doorman remembers the step-up for this person
    and client, so the client's next authorization forces a fresh sign-in even without max_age
    (what most clients do: run their OAuth flow again); after that, nothing is forced."""
    e = audit_envs("pa-stepup")
    d = e.d
    token, pages = local_token(e, "alice")
    assert signed_in_pages(pages), "the first sign-in shows the sign-in page"
    first_auth = claims_of(token)["auth_time"]

    # Fresh enough: the tool runs.
    assert call_tool(d, token, "py_progress", {"steps": 1}).get("isError") is not True
    advance_clock(d, 400)  # the sign-in is now older than the policy's 5 minutes

    # Other tools don't care how old the sign-in is.
    assert result_text(call_tool(d, token, "py_add", {"a": 1, "b": 2})) == "3"
    # Before any challenge, the browser's sign-in is remembered (the twin): a max_age it meets,
    # or none, shows no sign-in page.
    for extra in ({"max_age": "3600"}, {}):
        _, pages = local_token(e, "alice", **extra)
        assert not signed_in_pages(pages), (extra, pages)

    trace = trace_id()
    r = mcp_post(d, token, "tools/call", {"name": "py_progress", "arguments": {"steps": 1}}, name="py_progress",
                 traceparent=traceparent(trace))
    assert_step_up_challenge(d, r, 300)
    row = one_row(d, request_id=trace)
    assert row["decision"] == "step_up_required" and row["policy"] == "fresh-sign-in", row
    assert row["outcome"] is None and row["name"] == "py_progress" and row["upstream"] == "py", row

    # The protected resource metadata the challenge names is there.
    prm = httpx2.get(f"{d.base}/.well-known/oauth-protected-resource/mcp", timeout=10)
    assert prm.status_code == 200 and prm.json()["resource"] == d.url, prm.text

    # The client runs its flow again, without max_age: the person must sign in again, though the
    # browser is signed in.
    fresh, pages = local_token(e, "alice")
    assert signed_in_pages(pages), pages
    assert claims_of(fresh)["auth_time"] >= first_auth + 400, (claims_of(fresh), first_auth)
    # Met: the next authorization is not forced again.
    _, pages = local_token(e, "alice")
    assert not signed_in_pages(pages), pages

    ok = call_tool(d, fresh, "py_progress", {"steps": 1})
    assert ok.get("isError") is not True and "done 1" in result_text(ok), ok
    # The old token is still refused for this tool.
    r = mcp_post(d, token, "tools/call", {"name": "py_progress", "arguments": {"steps": 1}}, name="py_progress")
    assert_step_up_challenge(d, r, 300)


def test_step_up_through_the_company_provider_asks_it_for_a_fresh_login(sso_env):
    """SSO only: Doorman's authorization endpoint sends the person straight to the provider, with
    prompt=login and max_age=0 when the sign-in is too old for the step-up it asked for. The
    provider's auth_time is on the real clock, so this test waits real seconds instead of moving
    Doorman's clock."""
    s, d = sso_env, sso_env.d
    with httpx2.Client(timeout=30, follow_redirects=False) as person_browser:
        token, urls = sso_token(s, "alice", person_browser)
        assert any(u.startswith(f"POST {s.idp.issuer}/interaction/") for u in urls), urls
        time.sleep(STEP_UP_SECONDS + 1.5)

        # The twin, before any challenge: a max_age the sign-in meets goes straight through, the
        # provider isn't asked.
        auths = s.idp.count("/auth")
        _, urls = sso_token(s, "alice", person_browser, max_age="3600")
        assert not any(s.idp.issuer in u for u in urls), urls
        assert s.idp.count("/auth") == auths

        r = mcp_post(d, token, "tools/call", {"name": "py_progress", "arguments": {"steps": 1}}, name="py_progress")
        assert_step_up_challenge(d, r, STEP_UP_SECONDS)

        # The client's next authorization (no max_age): to the provider for a fresh login (the
        # password is asked again).
        fresh, urls = sso_token(s, "alice", person_browser)
        asked = s.idp.requests("/auth")[-1]["params"]
        assert "login" in asked.get("prompt", "").split() and asked.get("max_age") == "0", asked
        assert any(u.startswith(f"POST {s.idp.issuer}/interaction/") and u.endswith("/login") for u in urls), urls
    assert claims_of(fresh)["auth_time"] > claims_of(token)["auth_time"]
    ok = call_tool(d, fresh, "py_progress", {"steps": 1})
    assert ok.get("isError") is not True and "done 1" in result_text(ok), ok


@pytest.mark.parametrize("py_entry_first", [False, True], ids=["alone", "after-a-py-only-entry"])
def test_a_policy_for_another_upstream_does_not_shadow_a_tools_connection_lifetime(audit_envs, py_entry_first):
    """The first policy that applies to a tool decides for it, `upstreams` included: an entry
    for py's tools (tools = ["*"], upstreams = ["py"]) listed first must not take over notes_*
    tools' `max_age` (the twin: the same notes entry alone)."""
    py_only = """
[[policies]]
name = "py-for-alice"
tools = ["*"]
upstreams = ["py"]
allow_people = ["alice"]
"""
    short_notes = """
[[policies]]
name = "short-notes"
tools = ["notes_*"]
max_age = "1h"
"""
    e = audit_envs(f"pa-lifetime-{int(py_entry_first)}", extra=(py_only if py_entry_first else "") + short_notes)
    d = e.d
    token, _ = local_token(e, "alice")
    connect_notes(e, token)
    assert json.loads(result_text(call_tool(d, token, "notes_whoami")))["sub"] == "sub-alice-work"
    if py_entry_first:
        # The upstreams-scoped entry decides for py's tools only.
        bob, _ = local_token(e, "bob")
        r = call_tool(d, bob, "py_add", {"a": 1, "b": 1})
        assert result_text(r) == 'Doorman policy "py-for-alice" does not allow you to call py_add.', r
    assert "notes_whoami" in list_tool_names(d, token) and "py_add" in list_tool_names(d, token)
    advance_clock(d, 2 * 3600)  # past short-notes' 1 h (the resource itself sets no max_age)
    fresh, _ = local_token(e, "alice")
    r = call_tool(d, fresh, "notes_whoami")
    assert r["isError"] is True and "older than this tool allows" in result_text(r), \
        f"notes_whoami still used a 2-hour-old connection although short-notes says 1h: {r}"


# ---------------------------------------------------------------------------------------------
# The audit trail: every decision and outcome, security events, JSON lines


def test_every_decision_outcome_and_security_event_is_recorded(audit_envs):
    e = audit_envs("pa-decisions", server={"log_format": "json"})
    d = e.d
    alice, _ = local_token(e, "alice")
    bob, _ = local_token(e, "bob")
    ids = person_ids(d)

    # A wrong password at Doorman's sign-in form.
    mallory = Browser(d)
    try:
        _, challenge = pkce()
        q = {"response_type": "code", "client_id": "tester", "redirect_uri": CLIENT_REDIRECT, "scope": "mcp",
             "code_challenge": challenge, "code_challenge_method": "S256", "state": "s", "resource": d.url}
        r = mallory.get(f"{d.base}/oauth/authorize?{urlencode(q)}")
        page_url = urljoin(d.base, r.headers["location"])
        page = mallory.get(page_url)
        form = next(f for f in forms_of(page.text) if "password" in f.fields)
        refused = mallory.submit(page_url, form, {"username": "alice", "password": "not alice's password"})
        assert refused.status_code == 401, refused.status_code
    finally:
        mallory.close()

    traces = {k: trace_id() for k in ("need", "notes", "add", "add_bad", "bob_write", "bob_slow", "greet",
                                      "read", "step_up")}
    # Layer 2: not connected yet -> connection_required; connected -> allowed, with the account.
    first = call_tool(d, alice, "notes_whoami", traceparent=traceparent(traces["need"]))
    assert first["isError"] is True and "Connect your Notes account" in result_text(first), first
    page = follow_connect(e, "alice", link_in(result_text(first)))
    assert page.status_code == 200 and "Notes is connected" in page.text
    who = call_tool(d, alice, "notes_whoami", traceparent=traceparent(traces["notes"]))
    assert json.loads(result_text(who))["sub"] == "sub-alice-work", who
    # A success and a tool error at an upstream.
    assert result_text(call_tool(d, alice, "py_add", {"a": 2, "b": 40}, traceparent=traceparent(traces["add"]))) == "42"
    bad = call_tool(d, alice, "py_add", {"a": "not a number", "b": 1}, traceparent=traceparent(traces["add_bad"]))
    assert bad["isError"] is True, bad
    # Denied by person (username, then email; the second policy has no name).
    w = call_tool(d, bob, "notes_write_note", {"name": "n", "text": "t"}, traceparent=traceparent(traces["bob_write"]))
    assert result_text(w) == 'Doorman policy "no-writes-for-bob" does not allow you to call notes_write_note.', w
    s_ = call_tool(d, bob, "py_slow", {"seconds": 0}, traceparent=traceparent(traces["bob_slow"]))
    assert result_text(s_) == 'Doorman policy "policies[4]" does not allow you to call py_slow.', s_
    assert "py_slow" in list_tool_names(d, alice) and "py_slow" not in list_tool_names(d, bob)
    # A prompt denied; a resource read (not subject to policies) allowed.
    r = mcp_post(d, alice, "prompts/get", {"name": "py_greet", "arguments": {"name": "A"}}, name="py_greet",
                 traceparent=traceparent(traces["greet"]))
    err = r.json()["error"]
    assert err["code"] == -32012 and err["data"]["policy"] == "greeting-for-root", err
    uris = [x["uri"] for x in mcp_post(d, alice, "resources/list").json()["result"]["resources"]]
    readme = next(u for u in uris if "readme" in u)
    r = mcp_post(d, alice, "resources/read", {"uri": readme}, name=readme, traceparent=traceparent(traces["read"]))
    assert "py fixture readme" in json.dumps(r.json()["result"]), r.text
    # Step-up.
    advance_clock(d, 400)
    r = mcp_post(d, alice, "tools/call", {"name": "py_progress", "arguments": {"steps": 1}}, name="py_progress",
                 traceparent=traceparent(traces["step_up"]))
    assert r.status_code == 401
    # Disconnecting (a built-in tool: audited, always allowed).
    gone = call_tool(d, alice, "doorman_disconnect", {"resource": "notes"})
    assert gone.get("isError") is not True and "alice@work.example" in result_text(gone), gone
    assert connection_rows(e) == []
    # Key rotations by the operator.
    assert cli(e, "keys", "rotate").returncode == 0
    assert cli(e, "keys", "add-sealing-key").returncode == 0

    expect = {
        "need": dict(event="tools/call", name="notes_whoami", upstream="notes", resource="notes",
                     decision="connection_required", outcome=None, person_id=ids["alice"]),
        "notes": dict(event="tools/call", name="notes_whoami", upstream="notes", resource="notes",
                      account="alice@work.example", decision="allowed", outcome="success", person_id=ids["alice"]),
        "add": dict(event="tools/call", name="py_add", upstream="py", decision="allowed", outcome="success",
                    policy=None, resource=None),
        "add_bad": dict(event="tools/call", name="py_add", decision="allowed", outcome="tool_error"),
        "bob_write": dict(name="notes_write_note", decision="denied", policy="no-writes-for-bob", outcome=None,
                          person_id=ids["bob"], person="bob@corp.example"),
        "bob_slow": dict(name="py_slow", decision="denied", policy="policies[4]", outcome=None),
        "greet": dict(event="prompts/get", name="py_greet", decision="denied", policy="greeting-for-root",
                      outcome=None),
        "read": dict(event="resources/read", name=readme, upstream="py", decision="allowed", outcome="success"),
        "step_up": dict(event="tools/call", name="py_progress", decision="step_up_required",
                        policy="fresh-sign-in", outcome=None),
    }
    for key, want in expect.items():
        row = one_row(d, request_id=traces[key])
        got = {k: row[k] for k in want}
        assert got == want, (key, got, row)
        assert row["kind"] == "call" and row["client_id"] == "tester", (key, row)
        assert row["person"] in ("alice@corp.example", "bob@corp.example"), (key, row)
        assert row["conversation"] and row["conversation"].startswith("grant:"), (key, row)
        assert row["arguments"] is None, "arguments only where a policy says log_arguments"
        if want.get("outcome"):
            assert row["latency_us"] and row["latency_us"] > 0, (key, row)
    # Times: the test clock moved 400 s before the step-up only.
    assert one_row(d, request_id=traces["step_up"])["at"] - one_row(d, request_id=traces["read"])["at"] >= 400_000

    # Security events.
    sec = wait_rows(d, lambda r: r["kind"] == "security", count=8)
    events = [(r["event"], r["person_id"]) for r in sec]
    assert ("sign_in", ids["alice"]) in events and ("sign_in", ids["bob"]) in events, events
    assert ("consent", ids["alice"]) in events and ("consent", ids["bob"]) in events, events
    failed = [r for r in sec if r["event"] == "sign_in_failed"]
    assert len(failed) == 1 and failed[0]["person"] == "alice" and failed[0]["client_id"] == "tester", failed
    assert failed[0]["person_id"] is None, "a failed sign-in proves nobody's identity"
    made = [r for r in sec if r["event"] == "connection_made"]
    assert len(made) == 1 and made[0]["person_id"] == ids["alice"], made
    assert made[0]["resource"] == "notes" and made[0]["account"] == "alice@work.example", made
    revoked = wait_rows(d, lambda r: r["event"] == "connection_revoked")
    assert len(revoked) == 1 and revoked[0]["person_id"] == ids["alice"] and revoked[0]["kind"] == "security", revoked
    assert revoked[0]["resource"] == "notes" and revoked[0]["account"] == "alice@work.example", revoked
    builtin = one_row(d, name="doorman_disconnect")
    assert builtin["upstream"] == "doorman" and builtin["decision"] == "allowed", builtin
    assert builtin["outcome"] == "success", builtin
    rotated = [r["detail"] for r in sec if r["event"] == "key_rotated"]
    assert len(rotated) == 2 and any(x.startswith("signing key") for x in rotated) and \
        any(x.startswith("sealing key") for x in rotated), rotated
    sign_in = next(r for r in sec if r["event"] == "sign_in" and r["person_id"] == ids["alice"])
    assert sign_in["person"] == "alice@corp.example" and sign_in["client_id"] == "tester", sign_in
    consent = next(r for r in sec if r["event"] == "consent" and r["person_id"] == ids["alice"])
    assert consent["client_id"] == "tester", consent

    # The same records as JSON log lines (target doorman::audit, message "audit").
    lines = {ln.get("request_id"): ln for ln in json_audit_lines(d) if ln.get("request_id")}
    for key in ("need", "bob_write", "step_up", "add_bad"):
        ln = lines.get(traces[key])
        assert ln is not None, (key, "no JSON audit line")
        assert ln["message"] == "audit" and ln["kind"] == "call", ln
        assert ln["decision"] == expect[key]["decision"], (key, ln)
    assert any(ln.get("event") == "sign_in_failed" for ln in json_audit_lines(d))

    # Security events about a person name them as call records do (the admin page's Person
    # column shows this field).
    unnamed = [(r["event"], r["person_id"]) for r in sec
               if r["person_id"] in (ids["alice"], ids["bob"]) and r["person"] not in ("alice@corp.example",
                                                                                      "bob@corp.example")]
    assert not unnamed, f"security records without the person's name (email or username): {unnamed}"


def test_the_cli_filters_the_audit_and_prints_json(audit_envs):
    e = audit_envs("pa-cli")
    d = e.d
    alice, _ = local_token(e, "alice")
    bob, _ = local_token(e, "bob")
    ids = person_ids(d)
    connect_notes(e, alice)
    call_tool(d, alice, "notes_whoami")
    call_tool(d, alice, "py_add", {"a": 1, "b": 1})
    call_tool(d, alice, "py_log", {"message": "hi"})
    wait_rows(d, lambda r: r["kind"] == "call", count=4)
    boundary = int(time.time()) + 1  # whole seconds: --since/--until take RFC 3339 to the second
    time.sleep(boundary - time.time() + 0.05)
    call_tool(d, bob, "py_add", {"a": 2, "b": 2})
    call_tool(d, bob, "notes_write_note", {"name": "x", "text": "y"})  # denied
    wait_rows(d, lambda r: r["kind"] == "call", count=6)

    everything = audit_cli(d, "--limit", "1000")
    assert len(everything) == len(audit_rows(d)), "every record (calls and security events)"
    ats = [r["at"] for r in everything]
    assert ats == sorted(ats, reverse=True), "newest first"
    assert all(isinstance(r["id"], int) for r in everything)
    fields = {"id", "at", "kind", "event", "person_id", "person", "client_id", "conversation", "upstream", "name",
              "resource", "account", "decision", "policy", "outcome", "latency_us", "request_id", "arguments",
              "detail"}
    assert fields <= set(everything[0]), set(everything[0])

    # --user by username, email and id give the same records.
    by_name = audit_cli(d, "--user", "alice", "--kind", "call")
    assert by_name and {r["person_id"] for r in by_name} == {ids["alice"]}
    assert audit_cli(d, "--user", "alice@corp.example", "--kind", "call") == by_name
    assert audit_cli(d, "--user", ids["alice"], "--kind", "call") == by_name
    assert {r["name"] for r in by_name} == {"notes_whoami", "py_add", "py_log"}
    # --tool takes a glob.
    assert {r["name"] for r in audit_cli(d, "--tool", "py_*")} == {"py_add", "py_log"}
    assert {(r["person"], r["name"]) for r in audit_cli(d, "--tool", "py_add")} == \
        {("alice@corp.example", "py_add"), ("bob@corp.example", "py_add")}
    assert audit_cli(d, "--tool", "py_a") == [], "a glob without * matches whole names only"
    # --resource, --decision, --kind.
    notes = audit_cli(d, "--resource", "notes", "--kind", "call")
    assert {(r["name"], r["decision"]) for r in notes} == {("notes_whoami", "connection_required"),
                                                           ("notes_whoami", "allowed")}, notes
    denied = audit_cli(d, "--decision", "denied")
    assert [(r["person"], r["name"], r["policy"]) for r in denied] == \
        [("bob@corp.example", "notes_write_note", "no-writes-for-bob")]
    sec = audit_cli(d, "--kind", "security")
    assert sec and all(r["kind"] == "security" for r in sec)
    assert {"sign_in", "consent", "connection_made"} <= {r["event"] for r in sec}
    assert audit_cli(d, "--user", "bob", "--decision", "allowed", "--tool", "py_*")[0]["name"] == "py_add"
    # --limit keeps the newest.
    two = audit_cli(d, "--limit", "2")
    assert [r["id"] for r in two] == [r["id"] for r in everything[:2]]
    # --since/--until: durations ago, RFC 3339 instants, dates.
    assert len(audit_cli(d, "--since", "1h", "--limit", "1000")) == len(everything)
    assert audit_cli(d, "--until", "1h") == []
    assert audit_cli(d, "--since", "2099-01-01") == []
    assert len(audit_cli(d, "--until", "2099-01-01T00:00:00Z", "--limit", "1000")) == len(everything)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(boundary))
    later = audit_cli(d, "--since", stamp, "--limit", "1000")
    assert [(r["person"], r["name"]) for r in later] == [("bob@corp.example", "notes_write_note"),
                                                         ("bob@corp.example", "py_add")], later
    earlier = audit_cli(d, "--until", stamp, "--limit", "1000")
    assert len(earlier) + len(later) == len(everything) and all(r["at"] < boundary * 1000 for r in earlier)
    today = time.strftime("%Y-%m-%d", time.gmtime(boundary))
    assert len(audit_cli(d, "--since", today, "--limit", "1000")) == len(everything) or \
        time.gmtime(everything[-1]["at"] / 1000).tm_mday != time.gmtime(boundary).tm_mday
    # Bad arguments are refused with a message.
    out = subprocess.run([str(DOORMAN_BIN), "audit", "--since", "yesterday", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "yesterday" in out.stderr, out.stderr
    # The table form names the columns and the records.
    out = subprocess.run([str(DOORMAN_BIN), "audit", "--decision", "denied", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "DECISION" in out.stdout and "denied (no-writes-for-bob)" in out.stdout, out.stdout


SECRETS = {
    "password": "hunter2-correct-horse",
    "api_key": "abc",
    "jwt": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl",
    "github": "ghp_0123456789abcdefABCDEF0123456789abcd",
    "openai": "sk-proj-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "random": "q8Zt3LxV0pR7mN2kW9sY4bH6cJ1fD5gA",
    "bearer": "Bearer 8f7e6d5c4b3a2910",
    "session_id": "plain-looking",
}


def test_arguments_are_recorded_only_where_asked_with_secrets_redacted(audit_envs):
    e = audit_envs("pa-redact", server={"log_format": "json"})
    d = e.d
    alice, _ = local_token(e, "alice")
    uuid = "4f9c2d1e-7b3a-4c5d-9e8f-0a1b2c3d4e5f"
    args = {
        "message": "Quarterly report for the board",
        "password": SECRETS["password"],
        "api_key": SECRETS["api_key"],
        "options": {"Authorization": SECRETS["bearer"], "count": 3, "note": SECRETS["github"],
                    "session_id": SECRETS["session_id"]},
        "attachments": ["plain words here", SECRETS["jwt"], SECRETS["openai"]],
        "token_free_text": "no secrets here",
        "blob": SECRETS["random"],
        "id": uuid,
    }
    trace = trace_id()
    r = call_tool(d, alice, "everything_echo", args, traceparent=traceparent(trace))
    assert "Echo: Quarterly report for the board" in result_text(r), r  # the upstream got everything
    plain = trace_id()
    call_tool(d, alice, "py_add", {"a": 1, "b": SECRETS["random"]}, traceparent=traceparent(plain))

    row = one_row(d, request_id=trace)
    assert row["policy"] == "audited-echo" and row["outcome"] == "success", row
    recorded = json.loads(row["arguments"])
    assert recorded == {
        "message": "Quarterly report for the board",
        "password": "[redacted]",
        "api_key": "[redacted]",
        "options": {"Authorization": "[redacted]", "count": 3, "note": "[redacted]", "session_id": "[redacted]"},
        "attachments": ["plain words here", "[redacted]", "[redacted]"],
        "token_free_text": "[redacted]",  # its key contains "token"
        "blob": "[redacted]",
        "id": uuid,
    }, recorded
    assert one_row(d, request_id=plain)["arguments"] is None, "py_add's policy does not log arguments"

    # No secret anywhere an operator looks: the store, the CLI, the JSON log.
    store = b"".join(f.read_bytes() for f in (d.dir / "data").iterdir() if f.name.startswith("doorman.db"))
    listing = json.dumps(audit_cli(d, "--limit", "1000"))
    log = d.log()
    for what, value in SECRETS.items():
        if what in ("api_key",):  # too short to search for
            continue
        assert value.encode() not in store, f"{what} is in the store"
        assert value not in listing, f"{what} is in `doorman audit`"
        assert value not in log, f"{what} is in the log"
    (line,) = [ln for ln in json_audit_lines(d) if ln.get("request_id") == trace]
    assert json.loads(line["arguments"]) == recorded


# ---------------------------------------------------------------------------------------------
# traceparent towards upstreams: a header-recording upstream in both protocol generations


class RecordingUpstream:
    """A minimal MCP server over HTTP (raw JSON-RPC, JSON answers) that records the headers of
    every request. `modern`: it answers server/discover with 2026-07-28 (stateless); otherwise
    only the 2025-11-25 initialize handshake (sessions). One tool, `headers`, whose text result
    is the JSON of the headers of its own tools/call request."""

    def __init__(self, modern: bool):
        self.modern = modern
        self.seen: list[tuple[str, dict]] = []
        up = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, status: int, body: dict | None, extra: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._reply(405, None)

            def do_DELETE(self):  # noqa: N802
                self._reply(200, None)

            def do_POST(self):  # noqa: N802
                msg = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                headers = {k.lower(): v for k, v in self.headers.items()}
                method = msg.get("method", "")
                up.seen.append((method, headers))
                if "id" not in msg:
                    return self._reply(202, None)
                rid = msg["id"]
                done = {"resultType": "complete"} if up.modern else {}
                if method == "server/discover":
                    if not up.modern:
                        return self._reply(400, {"jsonrpc": "2.0", "id": rid,
                                                 "error": {"code": -32601, "message": "Method not found"}})
                    return self._reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                        "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "recorder", "version": "0"}, **done}})
                if method == "initialize":
                    return self._reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                        "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "recorder", "version": "0"}}}, {"Mcp-Session-Id": "rec-session"})
                if method == "tools/list":
                    return self._reply(200, {"jsonrpc": "2.0", "id": rid, "result": {"tools": [{
                        "name": "headers", "description": "The request's headers",
                        "inputSchema": {"type": "object"}}], **done}})
                if method == "tools/call":
                    return self._reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                        "content": [{"type": "text", "text": json.dumps(headers)}], **done}})
                if method == "ping":
                    return self._reply(200, {"jsonrpc": "2.0", "id": rid, "result": {**done}})
                return self._reply(200, {"jsonrpc": "2.0", "id": rid,
                                         "error": {"code": -32601, "message": "Method not found"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("generation", ["legacy", "modern"])
def test_the_trace_continues_upstream_and_names_the_audit_record(audit_envs, generation):
    rec = RecordingUpstream(modern=generation == "modern")
    try:
        e = audit_envs(f"pa-trace-{generation}", upstreams=[{"name": "rec", "url": rec.url}])
        d = e.d
        alice, _ = local_token(e, "alice")
        trace = trace_id()
        got = json.loads(result_text(call_tool(d, alice, "rec_headers", traceparent=traceparent(trace))))
        assert one_row(d, request_id=trace)["name"] == "rec_headers"
        tp = got.get("traceparent")
        assert tp is not None, f"{generation} upstream got no traceparent: {sorted(got)}"
        version, t, span, flags = tp.split("-")
        assert (version, t, flags) == ("00", trace, "01") and re.fullmatch(r"[0-9a-f]{16}", span), tp

        # Without one (or with a malformed one) Doorman starts a trace; the audit names it too.
        for sent in (None, "00-00000000000000000000000000000000-0000000000000001-01", "garbage"):
            before = {r["id"] for r in audit_rows(d)}
            got = json.loads(result_text(call_tool(d, alice, "rec_headers", traceparent=sent)))
            (row,) = wait_rows(d, lambda r: r["id"] not in before and r["name"] == "rec_headers")
            assert HEX32.match(row["request_id"]) and row["request_id"] != "0" * 32, row
            assert got.get("traceparent", "").split("-")[1:2] == [row["request_id"]], (got, row)
    finally:
        rec.stop()


# ---------------------------------------------------------------------------------------------
# Operations: /metrics, /readyz


def test_metrics_count_what_happened_and_readyz_reports_ready(audit_envs):
    e = audit_envs("pa-metrics")
    d = e.d
    ready = httpx2.get(f"{d.base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "store": "ok", "key_ring": "loaded"}

    m0 = scrape(d)
    alice, _ = local_token(e, "alice")
    for _ in range(3):
        call_tool(d, alice, "py_add", {"a": 1, "b": 2})
    # Refused tokens, by reason.
    assert httpx2.post(d.url, json={}, timeout=10).status_code == 401
    assert mcp_post(d, "not-a-jwt", "tools/list").status_code == 401
    h, p, sig = alice.split(".")
    assert mcp_post(d, f"{h}.{p}.{'A' * len(sig)}", "tools/list").status_code == 401
    # A connect prompt (text form) and a connection.
    connect_notes(e, alice)
    call_tool(d, alice, "notes_whoami")
    before_hit = scrape(d).get("doorman_vault_lookups_total", outcome="hit")
    call_tool(d, alice, "notes_whoami")  # the connection is in memory now

    m1 = scrape(d)
    assert m1.get("doorman_vault_lookups_total", outcome="hit") == before_hit + 1, m1.having("doorman_vault_lookups_total")
    labels = {"method": "tools/call", "upstream": "py"}
    assert m1.get("doorman_requests_total", **labels) == m0.get("doorman_requests_total", **labels) + 3
    count = m1.get("doorman_request_duration_seconds_count", **labels)
    assert count == m0.get("doorman_request_duration_seconds_count", **labels) + 3
    buckets = sorted(((float(dict(ls)["le"]), v) for ls, v in
                      m1.having("doorman_request_duration_seconds_bucket", **labels).items()))
    assert buckets and buckets[-1] == (float("inf"), count), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "buckets are cumulative"
    assert m1.get("doorman_request_duration_seconds_sum", **labels) > 0
    assert m1.get("doorman_requests_total", method="tools/call", upstream="notes") >= 3
    for reason in ("missing_token", "malformed", "signature"):
        assert m1.get("doorman_auth_failures_total", reason=reason) == \
            m0.get("doorman_auth_failures_total", reason=reason) + 1, (reason, m1.having("doorman_auth_failures_total"))
    assert m1.get("doorman_connect_prompts_total", form="text", resource="notes") == \
        m0.get("doorman_connect_prompts_total", form="text", resource="notes") + 1
    assert sum(m1.having("doorman_vault_lookups_total").values()) > sum(m0.having("doorman_vault_lookups_total").values())

    # A refresh at the resource (its access tokens live 600 s).
    advance_clock(d, 700)
    assert json.loads(result_text(call_tool(d, alice, "notes_whoami")))["sub"] == "sub-alice-work"
    m2 = scrape(d)
    assert m2.get("doorman_connection_refreshes_total", outcome="success") == \
        m1.get("doorman_connection_refreshes_total", outcome="success") + 1
    (refreshed,) = wait_rows(d, lambda r: r["event"] == "connection_refreshed")
    assert refreshed["kind"] == "security" and refreshed["resource"] == "notes", refreshed
    assert refreshed["account"] == "alice@work.example" and refreshed["person_id"] == person_ids(d)["alice"], refreshed
    # An expired Doorman token.
    advance_clock(d, 7200)
    assert mcp_post(d, alice, "tools/list").status_code == 401
    m3 = scrape(d)
    POLICY_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (POLICY_ARTIFACTS / "metrics.txt").write_text(m3.text)
    assert m3.get("doorman_auth_failures_total", reason="expired") == \
        m2.get("doorman_auth_failures_total", reason="expired") + 1
    for family, kind in [("doorman_requests", "counter"), ("doorman_request_duration_seconds", "histogram"),
                         ("doorman_auth_failures", "counter"), ("doorman_connect_prompts", "counter"),
                         ("doorman_connection_refreshes", "counter"), ("doorman_vault_lookups", "counter"),
                         ("doorman_live_sessions", "gauge")]:
        assert m3.types.get(family) == kind, (family, m3.types)

    # Live stateful sessions: one opened, then ended.
    fresh, _ = local_token(e, "alice")
    live = scrape(d).get("doorman_live_sessions")

    async def session():
        http, c = client(e, fresh)
        async with http, c:
            await c.list_tools()
            during = scrape(d).get("doorman_live_sessions")
            assert during == live + 1, (live, during)

    lists = sum(scrape(d).having("doorman_requests_total", method="tools/list").values())
    anyio.run(session)
    assert sum(scrape(d).having("doorman_requests_total", method="tools/list").values()) == lists + 1
    deadline = time.monotonic() + 10
    while scrape(d).get("doorman_live_sessions") != live and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(d).get("doorman_live_sessions") == live


def test_readyz_reports_an_unreachable_store(py_upstream):
    from conftest import fresh_postgres_url

    url = fresh_postgres_url()
    d = oauth.accounts_doorman("pa-readyz-pg", [{"name": "py", "url": py_upstream.url}],
                               server={"database_url": url},
                               env={"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"})
    try:
        r = httpx2.get(f"{d.base}/readyz", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ready", "store": "ok", "key_ring": "loaded"}
        # Drop the database under it: not ready (503), while /healthz still answers.
        import glob
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
        subprocess.run([psql, "-h", parts.hostname, "-p", str(parts.port or 5432), "-U", parts.username or "postgres",
                        "-d", "postgres", "-c",
                        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{parts.path[1:]}';"
                        f" ", "-c", f"DROP DATABASE IF EXISTS {parts.path[1:]} WITH (FORCE);"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while True:
            r = httpx2.get(f"{d.base}/readyz", timeout=30)
            if r.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unavailable" and r.json()["store"] == "unreachable", r.json()
        assert httpx2.get(f"{d.base}/healthz", timeout=10).status_code == 200
    finally:
        d.stop()


class StallingRelay:
    """A TCP relay to PostgreSQL that can stop passing bytes while keeping every connection open:
    a store that hangs (a network partition, a frozen server), which a real PostgreSQL cannot be
    made to show on demand. A fake for that fault only; the database behind it is real."""

    def __init__(self, target_host: str, target_port: int):
        import socket
        import threading
        self.stalled = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.target = (target_host, target_port)
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.stalled.is_set():     # hold the bytes: the peer waits, nothing fails
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.stalled.clear()
        self.server.close()
        for s in self.sockets:
            s.close()


def test_readyz_answers_not_ready_promptly_when_the_store_hangs(py_upstream):
    """A store that stops answering (connections open, nothing comes back) is "not ready" with
    the reason in about a second, not after the pool's 10 s wait: a load balancer's health check
    (nginx, HAProxy: a few seconds) reads 503 instead of timing out. When the store answers
    again, so does /readyz, without a restart."""
    from urllib.parse import urlsplit

    from conftest import fresh_postgres_url

    url = urlsplit(fresh_postgres_url())
    relay = StallingRelay(url.hostname, url.port or 5432)
    d = oauth.accounts_doorman("pa-readyz-hang", [{"name": "py", "url": py_upstream.url}],
                               server={"database_url": url._replace(netloc=f"{url.username or 'postgres'}@127.0.0.1:{relay.port}").geturl()},
                               env={"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"})
    try:
        assert httpx2.get(f"{d.base}/readyz", timeout=10).status_code == 200
        relay.stalled.set()
        # Three checks in a row, each given 5 s (half the pool's wait): each answers 503.
        for _ in range(3):
            r = httpx2.get(f"{d.base}/readyz", timeout=5)
            assert r.status_code == 503, r.text
            assert r.json()["reason"] == "the store did not answer within 1s", r.json()
        assert httpx2.get(f"{d.base}/healthz", timeout=5).status_code == 200
        relay.stalled.clear()
        deadline = time.monotonic() + 30
        while httpx2.get(f"{d.base}/readyz", timeout=15).status_code != 200:
            assert time.monotonic() < deadline, "still not ready after the store came back"
            time.sleep(0.2)
    finally:
        relay.stalled.clear()
        d.stop()
        relay.close()


# ---------------------------------------------------------------------------------------------
# Retention (the purge runs every server.purge_interval of real time: one second here)


def test_retention_purges_old_records(audit_envs):
    e = audit_envs("pa-retention", extra=POLICIES + '\n[audit]\nretention = "1d"\n', server={"purge_interval": "1s"})
    d = e.d
    alice, _ = local_token(e, "alice")
    old = trace_id()
    call_tool(d, alice, "py_add", {"a": 1, "b": 1}, traceparent=traceparent(old))
    one_row(d, request_id=old)
    advance_clock(d, 2 * 86_400)  # the records above are now two days old; retention is one day
    fresh_token, _ = local_token(e, "alice")
    new = trace_id()
    call_tool(d, fresh_token, "py_add", {"a": 2, "b": 2}, traceparent=traceparent(new))
    one_row(d, request_id=new)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and wait_rows(d, lambda r: r["request_id"] == old, timeout=0):
        time.sleep(1)
    rows = audit_rows(d)
    assert not [r for r in rows if r["request_id"] == old], "a record past its retention is still there"
    assert [r for r in rows if r["request_id"] == new], "a record within its retention was purged"
    assert all(r["at"] >= rows[-1]["at"] - 86_400_000 for r in rows)
    assert "purged audit records past their retention" in d.log()


# ---------------------------------------------------------------------------------------------
# The pages, in real headless Chromium


@pytest.fixture
def site():
    s = LoopbackSite()
    yield s
    s.stop()


@pytest.fixture
def shots(monkeypatch):
    POLICY_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(browser, "BROWSER_ARTIFACTS", POLICY_ARTIFACTS)
    return POLICY_ARTIFACTS


@pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium")
def test_activity_and_admin_audit_pages_in_chromium(audit_envs, site, shots):
    e = audit_envs("pa-pages", extra=POLICIES + browser_client(site))
    d = e.d
    alice, _ = local_token(e, "alice")
    bob, _ = local_token(e, "bob")
    connect_notes(e, alice)
    call_tool(d, alice, "notes_whoami")
    call_tool(d, alice, "py_add", {"a": 20, "b": 22})
    call_tool(d, bob, "notes_write_note", {"name": "x", "text": "y"})  # denied
    call_tool(d, bob, "py_log", {"message": "bob was here"})
    wait_rows(d, lambda r: r["kind"] == "call", count=5)

    # An administrator: everything, then filtered with the page's own form.
    steps = sign_in_steps(e, site, "root") + [
        {"goto": f"{d.base}/admin/audit", "label": "open"},
        {"wait_for": "table.audit"},
        {"text": "h1", "label": "h1"},
        {"text": "table.audit", "label": "all"},
        {"screenshot": "admin-audit.png"},
        {"fill": {"input[name=user]": "bob", "input[name=tool]": "notes_*"}},
        {"click": "form.filters button[type=submit]"},
        {"wait_url": f"{d.base}/admin/audit?"},
        {"wait_for": "table.audit"},
        {"text": "table.audit tbody", "label": "bob-notes"},
        {"screenshot": "admin-audit-filtered.png"},
        {"goto": f"{d.base}/admin/audit?decision=connection_required", "label": "by-decision"},
        {"text": "main", "label": "connection-required"},
        {"goto": f"{d.base}/admin/audit?resource=nothing-here"},
        {"text": "main", "label": "nothing"},
        {"screenshot": "admin-audit-empty.png"},
    ]
    report = run_browser("policy-audit-admin", steps, timeout_ms=20000)
    got = by_label(steps, report["steps"])
    assert got["open"]["status"] == 200, got["open"]
    assert got["h1"]["text"] == "Audit"
    table = got["all"]["text"]
    for words in ("alice@corp.example", "bob@corp.example", "tools/call notes_whoami", "tools/call py_add",
                  "denied (no-writes-for-bob)", "connection_required", "success", "sign_in", "consent",
                  "connection_made", "notes: alice@work.example", "Tester"):
        assert words in table, (words, table)
    # Clients by the name Doorman knows them by, not by their id.
    assert "\ttester" not in table, table
    rows = [r for r in got["bob-notes"]["text"].splitlines() if r.strip()]
    assert len(rows) == 1 and "bob@corp.example" in rows[0] and "notes_write_note" in rows[0], rows
    assert "denied (no-writes-for-bob)" in rows[0], rows
    cr = got["connection-required"]["text"]
    assert "connection_required" in cr and "py_add" not in cr and "denied" not in cr.split("Filter", 1)[-1], cr
    assert "Nothing recorded for these filters." in got["nothing"]["text"], got["nothing"]["text"]

    # A person: their own calls only, no security events; and no admin page.
    steps = sign_in_steps(e, site, "bob") + [
        {"goto": f"{d.base}/activity", "label": "open"},
        {"wait_for": "table.audit"},
        {"text": "h1", "label": "h1"},
        {"text": "main", "label": "mine"},
        {"screenshot": "activity.png"},
        {"goto": f"{d.base}/activity?decision=denied"},
        {"text": "table.audit tbody", "label": "denied"},
        {"goto": f"{d.base}/activity?tool=py_*"},
        {"text": "table.audit tbody", "label": "py"},
        {"goto": f"{d.base}/admin/audit", "label": "admin"},
        {"wait_for": "h1"},
        {"text": "main", "label": "refused"},
        {"screenshot": "admin-audit-refused.png"},
    ]
    report = run_browser("policy-audit-activity", steps, timeout_ms=20000)
    got = by_label(steps, report["steps"])
    assert got["open"]["status"] == 200 and got["h1"]["text"] == "What your assistants did", got["h1"]
    mine = got["mine"]["text"]
    assert "notes_write_note" in mine and "py_log" in mine, mine
    assert "alice" not in mine and "notes_whoami" not in mine, "someone else's calls are not shown"
    assert "sign_in" not in mine and "consent" not in mine, "security events are for administrators"
    denied = [r for r in got["denied"]["text"].splitlines() if r.strip()]
    assert len(denied) == 1 and "notes_write_note" in denied[0], denied
    py = [r for r in got["py"]["text"].splitlines() if r.strip()]
    assert len(py) == 1 and "py_log" in py[0] and "success" in py[0], py
    assert got["admin"]["status"] == 403, got["admin"]
    assert "Administrators only" in got["refused"]["text"], got["refused"]["text"]
    assert "bob@corp.example" not in got["refused"]["text"] and "alice" not in got["refused"]["text"]
    for shot in ("admin-audit.png", "admin-audit-filtered.png", "admin-audit-empty.png", "activity.png",
                 "admin-audit-refused.png"):
        assert (shots / shot).stat().st_size > 0, shot

    # Not signed in at all: neither page shows anything; the browser is sent to sign in and back.
    for path in ("/activity", "/admin/audit"):
        r = httpx2.get(f"{d.base}{path}", timeout=10)
        assert r.status_code == 303 and "notes_write_note" not in r.text, (path, r.status_code)
        assert r.headers["location"] == "/sign-in/browser?" + urlencode({"return_to": path}), r.headers
