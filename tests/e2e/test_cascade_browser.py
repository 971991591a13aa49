"""The re-authorization cascade end to end in headless Chromium, with the TypeScript SDK's own
OAuth client (tests/clients/ts_oauth_client.mjs, a stateful 2025-11-25 client that registers
itself): it signs in through Doorman's pages; its first call needs the Notes resource
(`prompt = "reauthorize"`), so Doorman answers 401; the SDK's refresh is refused and it sends
the person to authorize again; in the same browser (still signed in to Doorman, consent
remembered) that authorization goes through the resource's own sign-in and consent pages, and
back to the client with a code; the SDK's retry gets the resource's answer, in the same session
and grant. Screenshots land in tests/artifacts/cascade-browser/."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

import browser
from browser import CHROMIUM, run_browser
from oauth import jwt_parts
from procs import ARTIFACTS, NODE
from test_layer2 import IDP_ACCOUNTS, PASSWORD, connection_rows, envs  # noqa: F401
from test_oauth_clients import TS_OAUTH_CLIENT, LineProcess

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/setup-test-env installs /usr/bin/chromium"),
]


@pytest.fixture(autouse=True)
def cascade_artifacts(monkeypatch):
    path = ARTIFACTS / "cascade-browser"
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(browser, "BROWSER_ARTIFACTS", path)


def test_the_typescript_client_follows_the_cascade_in_chromium(envs):
    e = envs("cascade-chromium", extra='prompt = "reauthorize"\n')
    ts = LineProcess([str(NODE), str(TS_OAUTH_CLIENT), e.d.url], "ts-cascade-client",
                     env={"TS_TOOL": "notes_whoami", "TS_TOOL_ARGS": "{}", "TS_CLIENT_NAME": "Cascade Test App"})
    idp_user, (idp_pw, idp_email) = "alice-work", IDP_ACCOUNTS["alice-work"]
    with tempfile.TemporaryDirectory(prefix="cascade-profile-") as profile:
        try:
            # 1. The client's first OAuth run: Doorman's sign-in and consent pages.
            start = ts.event("authorize")
            run_browser("cascade-sign-in", [
                {"goto": start["url"]},
                {"wait_url": f"{e.d.base}/sign-in"},
                {"fill": {"input[name=username]": "alice", "input[name=password]": PASSWORD}},
                {"click": "form:has(input[name=password]) button[type=submit]"},
                {"wait_url": f"{e.d.base}/consent"},
                {"click": 'button[name="decision"][value="allow"]'},
                {"wait_url": start["redirectUrl"]},
            ], timeout_ms=20000, profile=Path(profile))

            # 2. Its first call needs Notes: 401, refresh refused, the SDK authorizes again. The
            # browser passes Doorman (signed in, consent remembered) straight to the resource's
            # own pages, then comes back to the client.
            again = ts.event("authorize")
            assert again["url"].startswith(f"{e.d.base}/oauth/authorize?"), again
            steps = [
                {"goto": again["url"]},
                {"wait_url": f"{e.idp.issuer}/interaction/"},
                {"wait_for": "input[name=username]"},
                {"screenshot": "resource-sign-in.png"},
                {"fill": {"input[name=username]": idp_user, "input[name=password]": idp_pw}},
                {"click": "form button[type=submit]"},
                {"wait_for": 'button[name="decision"][value="allow"]'},
                {"text": "main", "label": "resource-consent"},
                {"screenshot": "resource-consent.png"},
                {"click": 'button[name="decision"][value="allow"]'},
                {"wait_url": again["redirectUrl"]},
                {"text": "body", "label": "client"},
            ]
            report = run_browser("cascade-resource", steps, timeout_ms=20000, profile=Path(profile))
            got = {s["label"]: r for s, r in zip(steps, report["steps"]) if "label" in s}
            assert "Allow doorman-notes?" in got["resource-consent"]["text"], got["resource-consent"]
            assert "Signed in" in got["client"]["text"], got["client"]

            seen = ts.event("connected", timeout=90)
            # The retry got the resource's answer: the person's own account there.
            assert not seen["call"].get("isError"), seen["call"]
            assert json.loads(seen["call"]["content"][0]["text"])["sub"] == "sub-alice-work", seen["call"]
            assert seen["reauthorized"]["stateMatches"] and seen["reauthorized"]["error"] is None, seen
            assert seen["authorizeCount"] == 2 and "tokens" in seen["invalidations"], seen
            # The new tokens continue the grant the first ones belong to.
            first, second = seen["tokens"][0], seen["tokens"][-1]
            assert first["access_token"] != second["access_token"]
            assert jwt_parts(first["access_token"])[1]["sid"] == jwt_parts(second["access_token"])[1]["sid"]
            assert [(r[1], r[2]) for r in connection_rows(e)] == [("notes", idp_email)]

            # The next call needs nothing more: no prompt, no new authorization.
            ts.send("again")
            third = ts.event("again")
            assert not third["call"].get("isError") and third["reauthorized"] is None, third
            assert third["authorizeCount"] == 2 and third["sessionId"] == seen["sessionId"], third
            ts.send("quit")
            ts.event("done")
            assert ts.proc.wait(30) == 0, ts.stderr()
        finally:
            ts.stop()
