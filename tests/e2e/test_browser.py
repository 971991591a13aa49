"""Layer 1 in real headless Chromium (Debian's chromium driven by playwright-core): the
authorization code flow through Doorman's sign-in and consent pages, screenshots of both
(tests/artifacts/browser/), the pages refusing to be framed, and the sign-in cookie out of
reach of scripts. The code the browser brings back is then redeemed and used on /mcp."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import httpx2
import pytest

from browser import CHROMIUM, PAGE_URL, LoopbackSite, run_browser
from oauth import accounts_doorman, add_user, pkce, query_of

CLIENT = "browser-test-app"
PASSWORD = "correct horse battery staple 42"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium")


@pytest.fixture
def site():
    s = LoopbackSite()
    yield s
    s.stop()


def check_not_framed(step: dict, site: LoopbackSite, what: str) -> None:
    """The framing page held two iframes: `doorman` (a Doorman page) and `control` (a page that
    allows framing, proving frames do render in this browser)."""
    frames = {f["name"]: f for f in step["frames"]}
    control, doorman = frames["control"], frames["doorman"]
    assert control["has_form"] and "framable test page" in control["text"], control
    assert not doorman["has_form"] and not doorman["has_password"], f"{what} rendered inside a frame: {doorman}"
    assert "Doorman" not in (doorman["text"] or ""), doorman
    assert not (doorman["url"] or "").startswith(doorman["src"][:30]), doorman  # Chromium's error page instead
    assert any("frame-ancestors" in m for m in step["console"]), step["console"]


def test_sign_in_and_consent_in_chromium(py_upstream, site):
    d = accounts_doorman("doorman-browser", [{"name": "py", "url": py_upstream.url}], extra_toml=(
        "[[sign_in.clients]]\n"
        f'client_id = "{CLIENT}"\n'
        'name = "Browser Test App"\n'
        f'redirect_uris = ["{site.callback_url}"]\n'))
    try:
        add_user(d, "carol", PASSWORD, email="carol@example.com")
        verifier, challenge = pkce()
        state = secrets.token_urlsafe(16)
        authorize = f"{d.base}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": CLIENT, "redirect_uri": site.callback_url,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "scope": "mcp", "resource": f"{d.base}/mcp"})
        framing = site.frame_url({"doorman": PAGE_URL, "control": f"{site.base}/framable"})

        report = run_browser("layer1-sign-in", [
            {"goto": authorize},
            {"wait_url": f"{d.base}/sign-in"},
            {"screenshot": "layer1-sign-in.png"},
            {"frame_check": framing},
            {"fill": {"input[name=username]": "carol", "input[name=password]": PASSWORD}},
            {"click": "form:has(input[name=password]) button[type=submit]"},
            {"wait_url": f"{d.base}/consent"},
            {"screenshot": "layer1-consent.png"},
            {"document_cookie": True},
            {"context_cookies": True},
            {"frame_check": framing, "screenshot": "layer1-consent-framed.png"},
            {"click": 'button[name="decision"][value="allow"]'},
            {"wait_url": site.callback_url},
            {"text": "#done"},
        ])
        steps = report["steps"]

        # Framing: neither page renders inside another origin's frame (CSP frame-ancestors 'none').
        check_not_framed(steps[3], site, "the sign-in page")
        check_not_framed(steps[10], site, "the consent page")

        # The sign-in cookie exists in the browser but page scripts cannot see it (HttpOnly).
        cookies = {c["name"]: c for c in steps[9]["cookies"]}
        assert "doorman_session" in cookies and cookies["doorman_session"]["httpOnly"], cookies
        assert all(c["httpOnly"] for name, c in cookies.items() if name.startswith("doorman_")), cookies
        assert "doorman_session" not in steps[8]["document_cookie"], steps[8]
        assert "doorman_" not in steps[8]["document_cookie"], steps[8]

        # Landed on the client's redirect URI with code, state and iss (RFC 9207).
        assert report["url"].startswith(site.callback_url), report["url"]
        assert steps[13]["text"] == "Signed in"
        assert len(site.callbacks) == 1
        q = query_of(report["url"])
        assert q["state"] == [state] and q["iss"] == [d.base] and q["code"][0], q

        tok = httpx2.post(f"{d.base}/oauth/token", data={
            "grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": site.callback_url,
            "code_verifier": verifier, "client_id": CLIENT}, timeout=30)
        assert tok.status_code == 200, tok.text
        access = tok.json()["access_token"]
        r = httpx2.post(d.url, headers={"Authorization": f"Bearer {access}",
                                        "Accept": "application/json, text/event-stream",
                                        "Content-Type": "application/json"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                            "protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": {"name": "browser-test", "version": "0"}}}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        d.stop()
