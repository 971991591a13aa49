"""Soak: three nodes on one PostgreSQL behind nginx under mixed traffic for a while, sampling each
node's resident memory and open file descriptors; a leak shows as growth after the warm-up.

The traffic, from three people at once: sign-ins (again whenever a token has expired), tool calls
on three resources (stateless), connects (through the resource's real authorization server),
disconnects, refreshes (the nodes' test clocks are moved past the resources' token lifetime
every few rounds), and stateful sessions opened, used and ended.

In the suite it runs 5 minutes (`DOORMAN_SOAK_SECONDS`) with a sample every 10 s, and fails when
memory grows by more than SOAK_MIB_BOUND after the first fifth (the warm-up) or descriptors by
more than 50; `scripts/soak` runs it for an hour with a sample a minute and prints the slopes.
Figures: tests/artifacts/soak.json."""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from urllib.parse import urlencode

import httpx2
import pytest

from balancer import NGINX, Nginx
from conftest import fresh_postgres_url, modern_headers, modern_request
from idp import account, idp_client, idp_walk, resource_server, start_idp
from oauth import Browser, accounts_doorman, add_user, advance_clock, pkce, query_of
from procs import ARTIFACTS, free_port
from resource_peers import start_resource_upstream
from test_layer2 import IDP_ACCOUNTS, NOTES_SECRET

SECONDS = float(os.environ.get("DOORMAN_SOAK_SECONDS", "300"))
SAMPLE_EVERY = float(os.environ.get("DOORMAN_SOAK_SAMPLE_SECONDS", "10"))
SOAK_MIB_BOUND = float(os.environ.get("DOORMAN_SOAK_MIB_BOUND", "24"))
RESOURCES = ("notes", "wiki", "files")
PEOPLE = {"alice": "alice-work", "bob": "bob-notes", "carol": "alice-test"}
PASSWORD = "a soak test's long password"
CLIENT = "soak-client"
REDIRECT = "http://127.0.0.1/callback"

pytestmark = pytest.mark.timeout(int(SECONDS) + 300)


def rss_and_fds(pid: int) -> tuple[float, int]:
    status = open(f"/proc/{pid}/status").read()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points) or 1.0
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600


class Soak:
    def __init__(self):
        url = fresh_postgres_url()
        env = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n", "NOTES_SECRET": NOTES_SECRET}
        ports = [free_port() for _ in range(3)]
        lb_port = free_port()
        self.public = f"http://127.0.0.1:{lb_port}"
        notes_port = free_port()
        audience = f"http://127.0.0.1:{notes_port}/mcp"
        callback = f"{self.public}/connect/callback"
        self.idp = start_idp(
            clients=[idp_client(f"doorman-{r}", NOTES_SECRET, [callback]) for r in RESOURCES],
            accounts=[account(u, pw, email=email) for u, (pw, email) in IDP_ACCOUNTS.items()],
            resource_server=resource_server(audience, access_token_ttl=600, always_refresh=True),
            name="soak-idp")
        self.notes = start_resource_upstream(notes_port, self.idp.issuer, audience, name="soak-notes")
        toml = "".join(f"""
[[resources]]
name = "{r}"
display_name = "{r.title()}"
issuer = "{self.idp.issuer}"
client_id = "doorman-{r}"
client_secret_env = "NOTES_SECRET"
scopes = ["openid", "email", "notes:read", "notes:write"]
identity = {{ id_token_claim = "email" }}
binding = "user"
""" for r in RESOURCES) + f"""
[[sign_in.clients]]
client_id = "{CLIENT}"
name = "Soak"
redirect_uris = ["{REDIRECT}"]
"""
        upstreams = [{"name": r, "url": self.notes.url, "resource": r} for r in RESOURCES]
        server = {"database_url": url, "public_url": self.public, "session_idle_timeout": "1d"}
        self.nodes = [accounts_doorman(f"soak-{i}", upstreams, extra_toml=toml, server=server, env=env, port=p)
                      for i, p in enumerate(ports)]
        self.lb = Nginx("soak", ports, port=lb_port)
        for person in PEOPLE:
            add_user(self.nodes[0], person, PASSWORD)
        self.errors: list[str] = []
        self.counts = {"sign_ins": 0, "calls": 0, "connects": 0, "disconnects": 0, "sessions": 0, "clock_moves": 0}
        self.lock = threading.Lock()
        # Moving the nodes' clocks expires whatever is halfway through a browser flow (codes,
        # consent requests, connect states): flows and moves take turns.
        self.flows = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def stop(self):
        self.lb.stop()
        for d in self.nodes:
            d.stop()
        self.notes.stop()
        self.idp.stop()

    # --- One person's traffic ----------------------------------------------------------------

    def sign_in(self, browser: Browser, person: str) -> str:
        with self.flows:
            return self._sign_in(browser, person)

    def _sign_in(self, browser: Browser, person: str) -> str:
        verifier, challenge = pkce()
        q = urlencode({"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "state": "s",
                       "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{self.public}/mcp"})
        back = browser.authorize(f"{self.public}/oauth/authorize?{q}", person, PASSWORD)
        r = httpx2.post(f"{self.public}/oauth/token", data={
            "grant_type": "authorization_code", "code": query_of(back)["code"][0], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": CLIENT}, timeout=30)
        assert r.status_code == 200, r.text
        self.count("sign_ins")
        return r.json()["access_token"]

    def call(self, http: httpx2.Client, token: str, tool: str, args: dict | None = None) -> httpx2.Response:
        self.count("calls")
        return http.post(f"{self.public}/mcp", headers=modern_headers("tools/call", tool) | {
            "Authorization": f"Bearer {token}"}, json=modern_request("tools/call", {"name": tool, "arguments": args or {}}))

    def connect(self, browser: Browser, idp_user: str, link: str) -> None:
        with self.flows:
            self._connect(browser, idp_user, link)

    def _connect(self, browser: Browser, idp_user: str, link: str) -> None:
        r = browser.get(link)
        if r.status_code != 303:
            self.errors.append(f"connect link answered {r.status_code}")
            return
        with httpx2.Client(timeout=30, follow_redirects=False) as idp_http:
            back = idp_walk(idp_http, r.headers["location"], self.idp, idp_user, IDP_ACCOUNTS[idp_user][0], "allow")
        page = browser.get(back)
        if page.status_code != 200:
            self.errors.append(f"connect callback answered {page.status_code}")
        self.count("connects")

    def session_churn(self, http: httpx2.Client, token: str) -> bool:
        """Opens a stateful session, uses it, ends it; False when the token has expired."""
        h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
             "Content-Type": "application/json"}
        r = http.post(f"{self.public}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": {"name": "soak", "version": "0"}}})
        if r.status_code == 401:
            return False
        if r.status_code != 200:
            self.errors.append(f"initialize answered {r.status_code}")
            return True
        sid = r.headers["mcp-session-id"]
        h |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        http.post(f"{self.public}/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        r = http.post(f"{self.public}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        if r.status_code == 401:  # the token expired meanwhile (another person moved the clocks)
            return False
        if r.status_code != 200:
            self.errors.append(f"tools/list in a session answered {r.status_code}")
        http.delete(f"{self.public}/mcp", headers=h)
        self.count("sessions")
        return True

    def person(self, person: str, idp_user: str, deadline: float, mover: bool) -> None:
        browser = Browser(type("Public", (), {"base": self.public})())
        token = None
        rounds = 0
        with httpx2.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                rounds += 1
                try:
                    if token is None:
                        token = self.sign_in(browser, person)
                    for r in RESOURCES:
                        resp = self.call(http, token, f"{r}_whoami")
                        if resp.status_code == 401:
                            token = None  # expired by the moved clock: sign in again
                            break
                        body = resp.json()
                        result = body.get("result") or {}
                        if result.get("isError"):
                            text = result["content"][0]["text"]
                            link = next((w.rstrip(".") for w in text.split() if "/connect/" in w), None)
                            if link:
                                self.connect(browser, idp_user, link)
                            else:
                                self.errors.append(f"{r}: {text[:120]}")
                        elif "error" in body:
                            self.errors.append(f"{r}: {body['error']['message'][:120]}")
                    if token and rounds % 7 == 0 and not self.session_churn(http, token):
                        token = None
                    if token and rounds % 11 == 0:
                        self.call(http, token, "doorman_disconnect", {"resource": RESOURCES[rounds % 3]})
                        self.count("disconnects")
                    if mover and rounds % 13 == 0:
                        with self.flows:
                            for d in self.nodes:  # past the resources' 600 s tokens: refreshes follow
                                advance_clock(d, 700)
                        self.count("clock_moves")
                except (httpx2.TransportError, AssertionError, KeyError, ValueError) as e:
                    self.errors.append(f"{person}: {type(e).__name__}: {str(e)[:160]}")
                    token = None
                    time.sleep(0.5)
        browser.close()


def test_soak_memory_and_descriptors_stay_flat_under_mixed_traffic():
    if not NGINX.exists():
        pytest.fail("nginx is missing: scripts/setup-test-env installs it")
    soak = Soak()
    samples: dict[int, list[tuple[float, float, int]]] = {i: [] for i in range(3)}
    try:
        started = time.monotonic()
        deadline = started + SECONDS
        workers = [threading.Thread(target=soak.person, args=(p, u, deadline, i == 0), daemon=True)
                   for i, (p, u) in enumerate(PEOPLE.items())]
        for w in workers:
            w.start()
        while time.monotonic() < deadline:
            for i, d in enumerate(soak.nodes):
                rss, fds = rss_and_fds(d.proc.pid)
                samples[i].append((time.monotonic() - started, rss, fds))
            time.sleep(SAMPLE_EVERY)
        for w in workers:
            w.join(120)
        served = {}
        for node in soak.lb.served_by():
            served[node] = served.get(node, 0) + 1
    finally:
        soak.stop()

    report = {"seconds": SECONDS, "counts": soak.counts, "errors": len(soak.errors), "served_by": served,
              "nodes": {}}
    warm = SECONDS / 5
    for i, points in samples.items():
        after = [p for p in points if p[0] >= warm]
        quarter = max(1, len(after) // 4)
        first, last = after[:quarter], after[-quarter:]
        growth = sum(p[1] for p in last) / len(last) - sum(p[1] for p in first) / len(first)
        report["nodes"][f"node{i}"] = {
            "rss_mib_start": round(after[0][1], 1), "rss_mib_end": round(after[-1][1], 1),
            "rss_growth_mib_after_warmup": round(growth, 1),
            "rss_slope_mib_per_hour": round(slope_per_hour([(t, r) for t, r, _ in after]), 1),
            "fds_start": after[0][2], "fds_end": after[-1][2], "fds_max": max(p[2] for p in points),
            "fds_slope_per_hour": round(slope_per_hour([(t, f) for t, _, f in after]), 1),
        }
    (ARTIFACTS / "soak.json").write_text(json.dumps({**report, "samples": samples,
                                                    "first_errors": soak.errors[:20]}, indent=1))
    print(f"\nsoak: {json.dumps(report, indent=1)}")
    # The traffic really was mixed, and reached every node.
    for what in ("sign_ins", "calls", "connects", "disconnects", "sessions", "clock_moves"):
        assert soak.counts[what] > 0, (what, soak.counts)
    assert len(served) == 3, served
    # Errors: at most a handful (a call racing a disconnect), never a pattern.
    assert len(soak.errors) <= 5, soak.errors[:20]
    for name, n in report["nodes"].items():
        assert n["rss_growth_mib_after_warmup"] < SOAK_MIB_BOUND, (name, n)
        assert n["fds_end"] - n["fds_start"] < 50, (name, n)
