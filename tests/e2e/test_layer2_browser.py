"""Layer 2 in real headless Chromium: a person signed in to Doorman opens the connect link their
assistant gave them, signs in and consents at the resource's authorization server (the
oidc-provider peer, tests/peers/idp.mjs), lands on Doorman's "connected" page, then manages the
connection on /connections (sees it, disconnects it). Another person opening the same kind of
link is refused. Screenshots of every page land in tests/artifacts/layer2-browser/.

The MCP side (getting a connect link) uses a Doorman access token the Python page walker
obtains for the same person through the "tester" client; the browser signs in through its own
client, whose redirect URI is a loopback page that loads (Chromium refuses 127.0.0.1:9, an
"unsafe port"), so its consent page is a first one too."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import httpx2
import pytest

import browser
from browser import CHROMIUM, LoopbackSite, run_browser
from oauth import pkce, query_of
from procs import ARTIFACTS
from test_layer2 import IDP_ACCOUNTS, PASSWORD, Env, connection_rows, doorman_token, envs, prompt_link  # noqa: F401

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium"),
]

LAYER2_ARTIFACTS = ARTIFACTS / "layer2-browser"

BROWSER_CLIENT = "browser-app"


def browser_client(site: LoopbackSite) -> str:
    return f"""
[[sign_in.clients]]
client_id = "{BROWSER_CLIENT}"
name = "Browser App"
redirect_uris = ["{site.callback_url}"]
"""


@pytest.fixture
def site():
    s = LoopbackSite()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def layer2_artifacts(monkeypatch):
    LAYER2_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(browser, "BROWSER_ARTIFACTS", LAYER2_ARTIFACTS)


def sign_in_steps(e: Env, site: LoopbackSite, user: str, shot: str | None = None) -> list[dict]:
    """Doorman's authorization endpoint for the browser's public client (PKCE) through the sign-in
    form and the consent page; ends on the client's redirect URI. The browser keeps Doorman's
    cookie."""
    _, challenge = pkce()
    authorize = f"{e.d.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": BROWSER_CLIENT, "redirect_uri": site.callback_url, "scope": "mcp",
        "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_urlsafe(8),
        "resource": e.d.url})
    steps = [
        {"goto": authorize},
        {"wait_url": f"{e.d.base}/sign-in"},
        {"fill": {"input[name=username]": user, "input[name=password]": PASSWORD}},
        {"click": "form:has(input[name=password]) button[type=submit]"},
        {"wait_url": f"{e.d.base}/consent"},
        {"wait_for": 'button[name="decision"][value="allow"]'},
    ]
    if shot:
        steps.append({"screenshot": shot})
    steps += [
        {"click": 'button[name="decision"][value="allow"]'},
        {"wait_url": site.callback_url},
        {"wait_for": "#done"},
    ]
    return steps


def by_label(steps: list[dict], results: list[dict]) -> dict[str, dict]:
    """The results of the steps that carry a `label` (browser_flow.mjs ignores extra keys)."""
    return {s["label"]: r for s, r in zip(steps, results) if "label" in s}


def test_connect_then_disconnect_in_chromium(envs, site):
    e = envs("l2-browser", binding="user", extra=browser_client(site))
    link = prompt_link(e, doorman_token(e, "alice"))
    idp_user, (idp_pw, idp_email) = "alice-work", IDP_ACCOUNTS["alice-work"]
    allow_at_idp = 'button[name="decision"][value="allow"]'
    revoked_before = len(e.idp.revocations())

    steps = sign_in_steps(e, site, "alice", shot="doorman-consent.png") + [
        {"context_cookies": True, "label": "cookies"},
        # The connect link: straight on to the resource's authorization server.
        {"goto": link},
        {"wait_url": f"{e.idp.issuer}/interaction/"},
        {"wait_for": "input[name=username]"},
        {"screenshot": "idp-login.png"},
        {"fill": {"input[name=username]": idp_user, "input[name=password]": idp_pw}},
        {"click": "form button[type=submit]"},
        {"wait_for": allow_at_idp},
        {"screenshot": "idp-consent.png"},
        {"text": "main", "label": "idp-consent"},
        {"click": allow_at_idp},
        # Back at Doorman.
        {"wait_url": f"{e.d.base}/connect/callback"},
        {"wait_for": "h1"},
        {"text": "body", "label": "connected"},
        {"screenshot": "connect-done.png"},
        # The person's connections page.
        {"goto": f"{e.d.base}/connections"},
        {"wait_for": "table.connections"},
        {"text": "body", "label": "connections"},
        {"text": "table.connections tbody", "label": "rows"},
        {"screenshot": "connections.png"},
        {"click": 'form[action="/connections/disconnect"] button[type=submit]'},
        {"wait_url": f"{e.d.base}/connections/disconnect"},
        {"wait_for": "[role=status]"},
        {"text": "body", "label": "after"},
        {"screenshot": "connections-empty.png"},
    ]
    report = run_browser("layer2-connect", steps, timeout_ms=20000)
    got = by_label(steps, report["steps"])

    assert len(site.callbacks) == 1 and query_of(site.callbacks[0])["code"], site.callbacks
    cookies = {c["name"] for c in got["cookies"]["cookies"]}
    assert "doorman_session" in cookies, cookies

    idp_consent = got["idp-consent"]["text"]  # the resource's own consent, for Doorman's client there
    assert "Allow doorman-notes?" in idp_consent and "notes:read" in idp_consent, idp_consent

    connected = got["connected"]["text"]
    assert "Notes is connected" in connected, connected
    assert idp_email in connected and "close this tab" in connected, connected

    page = got["connections"]["text"]
    assert "Your connections" in page and "alice@corp.example" in page, page
    row = got["rows"]["text"]
    assert row.count(idp_email) == 1 and row.count("Reconnect") == 1, row  # one row
    assert "Notes" in row and idp_email in row and "active" in row and "user" in row, row
    assert "Reconnect" in row and "Disconnect" in row, row
    assert "Disconnect everything" in page, page

    after = got["after"]["text"]
    assert "Disconnected your Notes account alice@work.example." in after, after
    assert "No connections" in after and after.count(idp_email) == 1, after  # only in the notice
    assert "Disconnect everything" not in after, after

    # What the page says is what happened: nothing stored, the grant revoked at the resource.
    assert connection_rows(e) == []
    assert len(e.idp.revocations()) > revoked_before


def test_a_link_opened_by_another_person_is_refused_in_chromium(envs, site):
    e = envs("l2-browser-phish", binding="user", extra=browser_client(site))
    link = prompt_link(e, doorman_token(e, "alice"))

    steps = sign_in_steps(e, site, "bob") + [
        {"goto": link, "label": "open"},
        {"wait_for": "h1"},
        {"text": "body", "label": "page"},
        {"screenshot": "not-for-you.png"},
    ]
    report = run_browser("layer2-not-for-you", steps, timeout_ms=20000)
    got = by_label(steps, report["steps"])

    assert got["open"]["status"] == 403, got["open"]
    assert got["open"]["url"].startswith(f"{e.d.base}/connect/notes"), got["open"]  # went nowhere else
    text = got["page"]["text"]
    assert "This link is not for you" in text and "Nothing was connected" in text, text
    assert e.idp.issuer not in text
    assert connection_rows(e) == []
