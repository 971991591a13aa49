"""A newcomer's first hour in real headless Chromium, as issue "a front door" walks it: the
one-time setup link → the administrators' page with the next steps → a person signs in from a
client (keyboard only) → connects a resource → their home shows the client and the connection
→ revoking the client from home stops its token. Every Doorman page on the way is checked
with axe-core (no serious or critical violation) and photographed: tests/artifacts/console/
(axe-*.json beside the screenshots)."""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import urlencode

import httpx2
import pytest

import browser
from browser import CHROMIUM, LoopbackSite, run_browser, serious_violations
from oauth import add_user, pkce, query_of
from procs import ARTIFACTS
from test_layer2 import IDP_ACCOUNTS, prompt_link, start_env
from test_policy_audit import mcp_post

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium"),
]

CONSOLE_ARTIFACTS = ARTIFACTS / "console"
CLIENT = "newcomer-app"
CLIENT_NAME = "Newcomer App"
ADMIN_PW = "the first administrator's password"
ALICE_PW = "alice's own long password"


@pytest.fixture(autouse=True)
def console_artifacts(monkeypatch):
    CONSOLE_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(browser, "BROWSER_ARTIFACTS", CONSOLE_ARTIFACTS)


def labelled(steps: list[dict], report: dict) -> dict[str, dict]:
    return {s["label"]: r for s, r in zip(steps, report["steps"]) if "label" in s}


def page_checks(name: str) -> list[dict]:
    """A screenshot and an axe-core run of the page the browser is on."""
    return [{"screenshot": f"{name}.png"}, {"axe": name}]


def keyboard_sign_in(user: str, password: str) -> list[dict]:
    """Doorman's sign-in form, filled and sent with the keyboard only."""
    return [
        {"tab_to": "input[name=username]"}, {"type": user},
        {"tab_to": "input[name=password]"}, {"type": password},
        {"press": "Enter"},
    ]


def test_a_newcomers_first_hour(tmp_path):
    site = LoopbackSite()
    e = start_env("first-hour", extra=f"""
[[sign_in.clients]]
client_id = "{CLIENT}"
name = "{CLIENT_NAME}"
redirect_uris = ["{site.callback_url}"]
""")
    profile = tmp_path / "chromium-profile"
    axe: dict = {}
    try:
        base = e.d.base
        deadline = time.monotonic() + 10
        link = None
        while link is None and time.monotonic() < deadline:
            m = re.search(re.escape(base) + r"/setup\?token=[A-Za-z0-9_-]+", e.d.log())
            link = m and m.group(0)
            time.sleep(0.1)
        assert link, e.d.log()

        # 1. The setup link: the first administrator, typed with the keyboard; lands on /admin.
        steps = [
            # The checker's positive control: a page it must find fault with.
            {"goto": f"{site.base}/inaccessible"}, {"axe": "control", "label": "control"},
            {"goto": link}, {"wait_for": "input[name=username]"}, *page_checks("setup"),
            *keyboard_sign_in("admin", ADMIN_PW),
            {"wait_url": f"{base}/admin"}, {"wait_for": "h1"}, *page_checks("admin-welcome"),
            {"text": "main", "label": "admin"},
            {"goto": f"{base}/admin/audit"}, {"wait_for": "h1"}, *page_checks("admin-audit"),
            {"goto": f"{base}/connect/notes?prompt=not-a-prompt"}, {"wait_for": "h1"}, *page_checks("expired-link"),
            {"text": "main", "label": "expired"},
            {"goto": f"{base}/"}, {"wait_for": "h1"},
            {"tab_to": "nav form[action='/sign-out'] button"}, {"press": "Enter"},
            {"wait_for": "a.button.primary"}, *page_checks("visitor"), {"text": "main", "label": "visitor"},
        ]
        report = run_browser("first-hour-1-setup", steps, timeout_ms=20000, profile=profile)
        got = labelled(steps, report)
        control = {v["id"] for v in got["control"]["violations"] if v["impact"] in ("serious", "critical")}
        assert {"image-alt", "label", "button-name"} <= control, got["control"]
        axe.update(serious_violations({"steps": report["steps"][2:]}))
        admin = got["admin"]["text"]
        assert "Next steps" in admin and f"{base}/mcp" in admin, admin
        assert "[[upstreams]]" in admin and "notes" in admin, admin
        assert "This link has expired" in got["expired"]["text"]
        assert "Welcome to Doorman" in got["visitor"]["text"]

        # 2. The administrator adds a person, as the next steps say.
        add_user(e.d, "alice", ALICE_PW, email="alice@corp.example")

        # 3. Alice signs in from her client: sign-in and consent with the keyboard only.
        verifier, challenge = pkce()
        authorize = f"{base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": CLIENT, "redirect_uri": site.callback_url, "scope": "mcp",
            "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_urlsafe(8),
            "resource": e.d.url})
        steps = [
            {"goto": authorize}, {"wait_url": f"{base}/sign-in"}, {"wait_for": "input[name=username]"},
            *page_checks("sign-in"),
            *keyboard_sign_in("alice", ALICE_PW),
            {"wait_url": f"{base}/consent"}, {"wait_for": "button[name=decision]"}, *page_checks("consent"),
            {"tab_to": 'button[name="decision"][value="allow"]'}, {"press": "Enter"},
            {"wait_url": site.callback_url}, {"wait_for": "#done"},
        ]
        report = run_browser("first-hour-2-sign-in", steps, timeout_ms=20000, profile=profile)
        axe.update(serious_violations(report))
        code = query_of(site.callbacks[-1])["code"][0]
        r = httpx2.post(f"{base}/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": site.callback_url, "client_id": CLIENT, "resource": e.d.url}, timeout=30)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]

        # 4. A tool needs her Notes account: she opens the link, connects, and looks at home.
        link = prompt_link(e, token)
        idp_user, (idp_pw, idp_email) = "alice-work", IDP_ACCOUNTS["alice-work"]
        allow_at_idp = 'button[name="decision"][value="allow"]'
        steps = [
            {"goto": link}, {"wait_url": f"{e.idp.issuer}/interaction/"}, {"wait_for": "input[name=username]"},
            {"fill": {"input[name=username]": idp_user, "input[name=password]": idp_pw}},
            {"click": "form button[type=submit]"}, {"wait_for": allow_at_idp}, {"click": allow_at_idp},
            {"wait_url": f"{base}/connect/callback"}, {"wait_for": "h1"}, *page_checks("connected"),
            {"goto": f"{base}/"}, {"wait_for": "h1"}, *page_checks("home"), {"text": "main", "label": "home"},
            {"goto": f"{base}/connections"}, {"wait_for": "table.connections"}, *page_checks("connections"),
            {"goto": f"{base}/activity"}, {"wait_for": "h1"}, *page_checks("activity"),
            {"goto": f"{base}/admin"}, {"wait_for": "h1"}, *page_checks("admin-refused"),
            {"text": "main", "label": "refused"},
            # 5. Revoke the client from home, with the keyboard.
            {"goto": f"{base}/"}, {"wait_for": "h1"},
            {"tab_to": "form[action='/grants/revoke'] button"}, {"press": "Enter"},
            {"wait_url": f"{base}/grants/revoke"}, {"wait_for": "[role=status]"}, *page_checks("home-revoked"),
            {"text": "main", "label": "revoked"},
        ]
        report = run_browser("first-hour-3-home", steps, timeout_ms=20000, profile=profile)
        axe.update(serious_violations(report))
        got = labelled(steps, report)
        home = got["home"]["text"]
        assert "Signed in as alice@corp.example" in home, home
        assert CLIENT_NAME in home and "127.0.0.1" in home, home
        assert "Notes" in home and idp_email in home, home
        assert "Administrators only" in got["refused"]["text"]
        revoked = got["revoked"]["text"]
        assert f"{CLIENT_NAME} no longer has access" in revoked, revoked
        assert mcp_post(e.d, token, "tools/list").status_code == 401
        assert not axe, f"axe-core found serious or critical violations: {axe}"
    finally:
        e.stop()
        site.stop()
