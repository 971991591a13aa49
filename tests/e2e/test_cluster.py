"""Several Doorman nodes on one PostgreSQL: what one node (or an operator's command) changes
reaches the others at once through PostgreSQL LISTEN/NOTIFY, not at their next poll; and three
nodes behind nginx (round-robin, no stickiness) serving the same people, sessions and
connections as one.

The nodes here poll only once an hour (`server.poll_interval = "1h"`, the longest allowed), so a
change taking effect within seconds on another node can only have come through the listener.
Each case measures how long the other node took, from the answer of the request that made the
change to the first request the other node refused; p50 and p99 are printed and written to
tests/artifacts/cluster/invalidation.json (measured, not asserted: the assertion is that it
happened long before any poll)."""

from __future__ import annotations

import glob
import json
import secrets
import statistics
import subprocess
import time
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from conftest import DOORMAN_BIN, fresh_postgres_url, modern_headers, modern_request
from oauth import accounts_doorman, add_user, advance_clock
from procs import ARTIFACTS, free_port
from balancer import NGINX, Nginx
from idp import account, idp_client, idp_walk, resource_server, start_idp
from resource_peers import start_resource_upstream
from test_layer2 import IDP_ACCOUNTS, NOTES_SECRET, PASSWORD as L2_PASSWORD, client, connect_once, doorman_token, \
    doorman_whoami, follow_connect, start_env, text_of, whoami_of
from test_operators import CLIENT, CLIENTS_TOML, cli, mcp_status, tokens_for
from test_policy_audit import scrape

CLUSTER_ARTIFACTS = ARTIFACTS / "cluster"
PASSWORD = "alice's long password"
# Far longer than any wait below: what happens sooner came through LISTEN/NOTIFY.
WITHIN = 10.0


def psql(url: str, sql: str) -> str:
    binary = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    parts = urlsplit(url)
    out = subprocess.run([binary, "-h", parts.hostname, "-p", str(parts.port), "-U", parts.username or "postgres",
                          "-d", parts.path.lstrip("/"), "-tAc", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def pair(py_upstream):
    url = fresh_postgres_url()
    env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"}
    # One public URL for all nodes, as behind a load balancer: a token any node issued is for
    # the same audience everywhere. (Node a's own address stands in for the balancer's.)
    port_a = free_port()
    server = {"database_url": url, "poll_interval": "1h", "public_url": f"http://127.0.0.1:{port_a}"}
    nodes = [accounts_doorman(f"cluster-{n}", [{"name": "py", "url": py_upstream.url}], extra_toml=CLIENTS_TOML,
                              server=server, env=env, port=port) for n, port in (("a", port_a), ("b", None))]
    add_user(nodes[0], "alice", PASSWORD, email="alice@example.com")
    add_user(nodes[0], "bob", "bob's long password")
    nodes[0].pg_url = url
    yield nodes
    for d in nodes:
        d.stop()


class Watch:
    """Asks `d` with `token` every millisecond or so over one kept-alive connection, opened and
    checked (200) before the change, with `server/discover` (Doorman answers it itself: no upstream
    trip), so the figure is the node's and not the check's."""

    def __init__(self, d, token: str):
        self.url = d.url
        self.headers = modern_headers("server/discover", None) | {"Authorization": f"Bearer {token}"}
        self.body = modern_request("server/discover", {})
        self.http = httpx2.Client(timeout=10)
        assert self.status() == 200

    def status(self) -> int:
        return self.http.post(self.url, headers=self.headers, json=self.body).status_code

    def refused_after(self, started: float) -> float:
        """Seconds from `started` until the node refuses the token (401)."""
        try:
            while time.monotonic() - started < WITHIN:
                status = self.status()
                if status == 401:
                    return time.monotonic() - started
                assert status == 200, status
                time.sleep(0.001)
            raise AssertionError(f"{self.url} still accepted the token {WITHIN}s after the change")
        finally:
            self.http.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def record(name: str, seconds: list[float]) -> dict:
    CLUSTER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = CLUSTER_ARTIFACTS / "invalidation.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = {"n": len(seconds), "p50_ms": round(statistics.median(seconds) * 1000, 1),
                     "p99_ms": round(percentile(seconds, 99) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}
    path.write_text(json.dumps(figures, indent=1))
    print(f"\ninvalidation {name}: {figures[name]}")
    return figures[name]


def test_revoked_tokens_and_grants_stop_on_the_other_node_at_once(pair):
    a, b = pair
    heard_before = scrape(b).samples.get(("doorman_invalidations_heard_total", frozenset({("kind", "grant")})), 0)
    token_s, grant_s = [], []
    for i in range(16):
        tokens = tokens_for(a, "alice", PASSWORD)
        access = tokens["access_token"]
        watch = Watch(b, access)  # node b accepts the token
        if i % 2 == 0:
            # RFC 7009 on node a: this access token only.
            r = httpx2.post(f"{a.base}/oauth/revoke", data={"token": access, "client_id": CLIENT})
            started = time.monotonic()
            assert r.status_code == 200, r.text
            token_s.append(watch.refused_after(started))
        else:
            # Revoking the refresh token ends the whole grant, and every access token of it.
            r = httpx2.post(f"{a.base}/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": CLIENT})
            started = time.monotonic()
            assert r.status_code == 200, r.text
            grant_s.append(watch.refused_after(started))
    record("access_token_revoked", token_s)
    record("grant_revoked", grant_s)
    heard = scrape(b).samples.get(("doorman_invalidations_heard_total", frozenset({("kind", "grant")})), 0)
    assert heard >= heard_before + len(grant_s), (heard_before, heard)


def test_an_operator_disabling_a_person_stops_them_on_every_node(pair):
    a, b = pair
    seconds = []
    for _ in range(4):
        tokens = tokens_for(a, "bob", "bob's long password")
        watch = Watch(b, tokens["access_token"])
        out = cli(a, "users", "disable", "bob")
        started = time.monotonic()
        assert out.returncode == 0, out.stderr
        seconds.append(watch.refused_after(started))
        assert cli(a, "users", "enable", "bob").returncode == 0
    record("person_disabled", seconds)


def test_a_lost_listener_connection_is_re_established_and_what_it_missed_is_caught_up(pair):
    a, b = pair
    reconnects = scrape(b).samples.get(("doorman_change_listener_reconnects_total", frozenset()), 0)
    tokens = tokens_for(a, "alice", PASSWORD)
    watch = Watch(b, tokens["access_token"])
    # Cut every node's listener connection, then revoke while they reconnect: the change is
    # heard by a listener that is back already, or caught up by the re-read after subscribing.
    pids = psql(a.pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE query LIKE 'LISTEN %' AND datname = current_database()")
    assert pids.count("t") >= 2, pids  # one listener per node
    r = httpx2.post(f"{a.base}/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": CLIENT})
    assert r.status_code == 200
    watch.refused_after(time.monotonic())
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        listening = psql(a.pg_url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
                                   "AND datname = current_database()")
        if int(listening) >= 2:
            break
        time.sleep(0.1)
    assert int(listening) >= 2, "the listeners came back"
    assert scrape(b).samples.get(("doorman_change_listener_reconnects_total", frozenset()), 0) > reconnects
    # And they work again: the next revocation is heard at once.
    again = tokens_for(a, "alice", PASSWORD)
    watch = Watch(b, again["access_token"])
    r = httpx2.post(f"{a.base}/oauth/revoke", data={"token": again["access_token"], "client_id": CLIENT})
    assert r.status_code == 200
    watch.refused_after(time.monotonic())


def test_a_connection_deleted_on_one_node_is_not_used_from_another_nodes_memory():
    """Node b holds alice's opened Notes credential in memory (5 s); an operator revokes the
    connection through node a's store: node b stops using it at once instead of until its
    cache expires."""
    url = fresh_postgres_url()
    env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"}
    port_a = free_port()
    server = {"public_url": f"http://127.0.0.1:{port_a}", "poll_interval": "1h"}
    a = start_env("cluster-l2-a", binding="user", database_url=url, env=env, server=server, port=port_a)
    b = start_env("cluster-l2-b", binding="user", database_url=url, env=env, server=server, idp=a.idp, notes=a.notes)
    try:
        add_user(a.d, "alice", L2_PASSWORD, email="alice@corp.example")
        token = doorman_token(a, "alice")
        connect_once(a, token)
        headers = modern_headers("tools/call", "notes_whoami") | {"Authorization": f"Bearer {token}"}
        body = modern_request("tools/call", {"name": "notes_whoami", "arguments": {}})
        seconds = []
        with httpx2.Client(timeout=30) as http:
            def connected() -> bool:
                r = http.post(b.d.url, headers=headers, json=body)
                assert r.status_code == 200, r.text
                return not r.json()["result"].get("isError")

            assert connected()  # node b opened the credential and keeps it in memory
            out = subprocess.run([str(DOORMAN_BIN), "connections", "revoke", "--user", "alice", "--config",
                                  str(a.d.config)], capture_output=True, text=True, timeout=60)
            started = time.monotonic()
            assert out.returncode == 0 and "revoked 1 connection" in out.stdout, out.stdout + out.stderr
            while connected():
                # The opened credential lives 5 s in memory (vault/mod.rs CACHE_TTL_MS): using it
                # past that would be the cache expiring, not the change being heard.
                assert time.monotonic() - started < 4.5, "node b kept using the revoked connection"
                time.sleep(0.001)
            seconds.append(time.monotonic() - started)
        record("connection_revoked", seconds)
    finally:
        b.stop()
        a.stop()


# --- Three nodes behind nginx -------------------------------------------------------------------


class Cluster:
    """Three Doorman nodes on one PostgreSQL behind nginx; the nodes' public URL is nginx's. The
    resource's authorization server and the Notes upstream are shared peers."""

    def __init__(self):
        url = fresh_postgres_url()
        env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n", "NOTES_SECRET": NOTES_SECRET}
        ports = [free_port() for _ in range(3)]
        lb_port = free_port()
        self.public = f"http://127.0.0.1:{lb_port}"
        notes_port = free_port()
        audience = f"http://127.0.0.1:{notes_port}/mcp"
        self.idp = start_idp(
            clients=[idp_client("doorman-notes", NOTES_SECRET, [f"{self.public}/connect/callback"])],
            accounts=[account(u, pw, email=email) for u, (pw, email) in IDP_ACCOUNTS.items()],
            resource_server=resource_server(audience, access_token_ttl=600, always_refresh=True),
            name="cluster3-idp")
        self.notes = start_resource_upstream(notes_port, self.idp.issuer, audience, name="cluster3-notes")
        server = {"public_url": self.public}
        self.nodes = [start_env(f"cluster3-{i}", binding="user", database_url=url, env=env, server=server, port=p,
                                idp=self.idp, notes=self.notes) for i, p in enumerate(ports, 1)]
        self.lb = Nginx("cluster3", ports, port=lb_port)
        for user in ("alice", "bob"):
            add_user(self.nodes[0].d, user, L2_PASSWORD, email=f"{user}@corp.example")
        # The clients reach the nodes through nginx only.
        for e in self.nodes:
            e.d.url = f"{self.public}/mcp"
            e.public = self.public

    def stop(self):
        self.lb.stop()
        for e in self.nodes:
            e.d.stop()
            for b in e.browsers.values():
                b.close()
        self.notes.stop()
        self.idp.stop()


@pytest.fixture(scope="module")
def cluster3():
    if not NGINX.exists():
        pytest.fail("nginx is missing: scripts/setup-test-env installs it")
    c = Cluster()
    yield c
    c.stop()


def spread(lb: Nginx, since: int) -> dict[str, int]:
    """How many of the requests nginx passed on since the `since`-th went to each node."""
    out: dict[str, int] = {}
    for node in lb.served_by()[since:]:
        out[node] = out.get(node, 0) + 1
    return out


def test_sessions_continue_and_stateless_calls_work_on_whichever_node(cluster3):
    c = cluster3
    e = c.nodes[0]
    token = doorman_token(e, "alice")
    connect_once(e, token)  # the connect link and the resource's callback go through nginx too
    before = len(c.lb.served_by())

    async def run():
        for mode in ("legacy", "2026-07-28"):  # a stateful 2025-11-25 session, then stateless
            http, cl = client(e, token, mode=mode)
            async with http, cl:
                for _ in range(6):
                    assert (await whoami_of(cl))["sub"] == "sub-alice-work"
                who = await doorman_whoami(cl)
                assert who["person"] == "alice@corp.example"

    anyio.run(run)
    served = spread(c.lb, before)
    assert len(served) == 3, f"every node served part of the sessions: {served}"
    assert all(n >= 3 for n in served.values()), served


def test_refresh_is_single_flight_across_three_nodes_under_concurrent_calls(cluster3):
    c = cluster3
    e = c.nodes[1]
    token = doorman_token(e, "bob")
    connect_once(e, token, user="bob", idp_user="bob-notes")
    before = c.idp.count("/token", grant_type="refresh_token")
    for node in c.nodes:  # the resource's access token (600 s) has expired everywhere
        advance_clock(node.d, 700)

    async def many():
        results: list[str] = []
        http, cl = client(e, token, mode="2026-07-28")
        async with http, cl:
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    async def one():
                        results.append((await whoami_of(cl))["sub"])
                    tg.start_soon(one)
        assert len(results) == 12 and set(results) == {"sub-bob-notes"}, results

    served_before = len(c.lb.served_by())
    anyio.run(many)
    assert len(spread(c.lb, served_before)) == 3, "the concurrent calls reached every node"
    assert c.idp.count("/token", grant_type="refresh_token") == before + 1, "exactly one refresh at the resource"


def test_a_connect_completed_on_another_node_reaches_the_session_waiting_on_its_node(cluster3):
    """Carol's stateful session (and its GET stream) lives on node 1; the resource sends her
    browser back to node 3, which stores the connection: node 1 tells her client
    (`notifications/elicitation/complete`, MCP 2025-11-25) because node 3 announced it."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

    c = cluster3
    first, last = c.nodes[0], c.nodes[2]
    add_user(first.d, "carol", L2_PASSWORD, email="carol@corp.example")
    token = doorman_token(first, "carol")
    completed: list[str] = []

    async def on_message(msg):
        root = getattr(msg, "root", msg)
        if getattr(root, "method", None) == "notifications/elicitation/complete":
            completed.append(root.params.elicitation_id)

    async def never_called(ctx, params):  # declares elicitation (form and url)
        raise AssertionError("Doorman sends no elicitation/create requests on 2025-11-25")

    def connect_on(node, link: str) -> httpx2.Response:
        b = first.browser("carol")
        r = b.get(link)
        assert r.status_code == 303, r.text[:300]
        pw = IDP_ACCOUNTS["alice-test"][0]
        with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
            back = idp_walk(idp_http, r.headers["location"], c.idp, "alice-test", pw, "allow")
        assert back.startswith(f"{c.public}/connect/callback"), back
        return b.get(back.replace(c.public, node.d.base, 1))

    async def run():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120))
        cl = Client(streamable_http_client(f"{first.d.base}/mcp", http_client=http), mode="legacy",
                    elicitation_callback=never_called, message_handler=on_message)
        async with http, cl:
            await cl.list_tools()  # opens the session's GET stream, on node 1
            with pytest.raises(MCPError) as err:
                await cl.call_tool("notes_whoami", {})
            assert err.value.code == -32042
            (el,) = UrlElicitationRequiredError.from_error(err.value.error).elicitations
            page = await anyio.to_thread.run_sync(lambda: connect_on(last, el.url))
            assert page.status_code == 200 and "Notes is connected" in page.text, page.text[:300]
            with anyio.fail_after(10):
                while el.elicitation_id not in completed:
                    await anyio.sleep(0.05)
            assert (await whoami_of(cl))["sub"] == "sub-alice-test"

    anyio.run(run)


def test_a_group_change_at_sign_in_reaches_the_other_nodes_decisions_at_once(everything, py_upstream):
    """Pat's groups decide whether the `crm` upstream is his (a policy allows it to `sales`). Node
    b has his groups cached (30 s). His company moves him out of sales and he signs in again at
    node a, which stores his new groups: node b's next decision uses them at once. And back."""
    from types import SimpleNamespace

    from idp import account, idp_client, start_idp
    from test_one_decision import CRM_POLICIES, SALES, sso_sign_in
    from test_sso import SECRET as SSO_SECRET
    from test_sso import provider_toml

    url = fresh_postgres_url()
    port_a = free_port()
    public = f"http://127.0.0.1:{port_a}"
    idp = start_idp([idp_client("doorman", SSO_SECRET, [f"{public}/sign-in/callback"])], [SALES],
                    name="cluster-groups-idp")
    env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n", "CORP_OIDC_SECRET": SSO_SECRET}
    server = {"database_url": url, "public_url": public, "poll_interval": "1h"}
    nodes = []
    try:
        for name, port in (("a", port_a), ("b", None)):
            nodes.append(accounts_doorman(f"cluster-groups-{name}", [{"name": "crm", "url": everything.url},
                                                                     {"name": "py", "url": py_upstream.url}],
                                          port=port, sign_in={"local_accounts": False}, server=server, env=env,
                                          extra_toml=provider_toml(idp.issuer) + CRM_POLICIES))
        a, b = nodes
        s = SimpleNamespace(d=a, idp=idp)
        token = sso_sign_in(s, "pat")
        headers = modern_headers("tools/call", "crm_echo") | {"Authorization": f"Bearer {token}"}
        body = modern_request("tools/call", {"name": "crm_echo", "arguments": {"message": "hi"}})

        def allowed(http: httpx2.Client) -> bool:
            r = http.post(b.url, headers=headers, json=body)
            assert r.status_code == 200, r.text
            result = r.json()["result"]
            if result.get("isError"):
                text = result["content"][0]["text"]
                assert text == 'Doorman policy "crm-sales" does not allow you to call crm_echo.', text
                return False
            return True

        seconds = []
        with httpx2.Client(timeout=30) as http:
            assert allowed(http)  # node b decided with pat's groups, and keeps them 30 s
            for groups, want in ((["support", "mcp-users"], False), (["sales", "mcp-users"], True)) * 3:
                idp.put_account({**SALES, "groups": groups})
                sso_sign_in(s, "pat")  # at node a: his groups are stored, and announced
                started = time.monotonic()
                while allowed(http) != want:
                    # Past 25 s it would be node b's cache expiring, not the change being heard.
                    assert time.monotonic() - started < 25, f"node b still decides with old groups: {groups}"
                    time.sleep(0.001)
                seconds.append(time.monotonic() - started)
        record("groups_changed", seconds)
    finally:
        for d in nodes:
            d.stop()
        idp.stop()
