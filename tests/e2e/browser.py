"""Real headless Chromium for the end-to-end tests: `run_browser` hands a list of steps to
tests/clients/browser_flow.mjs (playwright-core driving Debian's /usr/bin/chromium) and returns
its JSON report; `LoopbackSite` is the relying party's side on 127.0.0.1 (the redirect URI
the browser lands on, and pages that try to frame other pages).

Screenshots and the browser's stderr land in tests/artifacts/browser/.
"""

from __future__ import annotations

import html
import json
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from procs import ARTIFACTS, NODE, ROOT

BROWSER_ARTIFACTS = ARTIFACTS / "browser"
BROWSER_FLOW = ROOT / "tests" / "clients" / "browser_flow.mjs"
CHROMIUM = Path("/usr/bin/chromium")
PAGE_URL = "{page_url}"  # in a frame_check URL: the page's current URL, percent-encoded


def run_browser(name: str, steps: list[dict], timeout_ms: int = 15000, process_timeout: float = 120,
                profile: Path | None = None) -> dict:
    """Runs `steps` (see browser_flow.mjs) in a fresh headless Chromium, or in the browser
    profile `profile` kept across runs (its cookies survive); returns the report.
    A failing step raises AssertionError with the report (and a failure screenshot's path)."""
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    plan_body = {"artifacts": str(BROWSER_ARTIFACTS), "timeout_ms": timeout_ms, "steps": steps}
    if profile is not None:
        plan_body["profile"] = str(profile)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix=f"{name}-", delete=False) as f:
        json.dump(plan_body, f)
        plan = f.name
    try:
        out = subprocess.run([str(NODE), str(BROWSER_FLOW), plan], capture_output=True, text=True,
                             timeout=process_timeout, cwd=str(ROOT))
    finally:
        Path(plan).unlink(missing_ok=True)
    (BROWSER_ARTIFACTS / f"{name}.stderr.log").write_text(out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"browser_flow.mjs printed no report (exit {out.returncode}): {out.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert report.get("ok") and out.returncode == 0, f"browser run {name} failed: {json.dumps(report, indent=1)[:4000]}"
    return report


def serious_violations(report: dict) -> dict[str, list[dict]]:
    """The axe-core violations of impact serious or critical, per `axe` step name, from a report
    whose plan's steps are in the same order (steps without violations are left out)."""
    out = {}
    for step in report["steps"]:
        bad = [v for v in step.get("violations", []) if v["impact"] in ("serious", "critical")]
        if bad:
            out[step["url"]] = bad
    return out


class _Handler(BaseHTTPRequestHandler):
    site: "LoopbackSite"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/callback":
            self.site.callbacks.append(self.path)
            body = ("<!doctype html><html lang=en><meta charset=utf-8><title>Signed in</title>"
                    "<h1 id=done>Signed in</h1><p>You can close this window.</p></html>")
        elif url.path == "/frame":
            frames = "".join(
                f'<iframe name="{html.escape(name)}" src="{html.escape(src)}" width="600" height="420"></iframe>'
                for name, src in zip(q.get("name", []), q.get("src", []))
            )
            body = f"<!doctype html><html lang=en><meta charset=utf-8><title>Framing test</title><body>{frames}</body></html>"
        elif url.path == "/inaccessible":
            # The positive control of the axe-core checks: an image without text, a field
            # without a label, a button without a name (critical violations, each).
            body = ("<!doctype html><html lang=en><meta charset=utf-8><title>Inaccessible</title>"
                    "<main><img src=data:image/gif;base64,R0lGODlhAQABAAAAACw= width=20 height=20>"
                    "<form><input name=q><button></button></form></main></html>")
        elif url.path == "/framable":
            body = ("<!doctype html><html lang=en><meta charset=utf-8><title>Framable</title>"
                    "<form><p id=marker>framable test page</p></form></html>")
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


class LoopbackSite:
    """A tiny site on http://127.0.0.1:<port> (its own origin, unlike Doorman's and the IdP's):
    - `/callback`: the OAuth redirect URI; every hit is recorded in `callbacks` (path + query);
    - `/frame?name=N&src=URL[&name=..&src=..]`: a page embedding each URL in an iframe named N;
    - `/framable`: a page anyone may frame (the positive control of a framing test);
    - `/inaccessible`: a page with accessibility violations (the positive control of axe-core)."""

    def __init__(self):
        self.callbacks: list[str] = []
        handler = type("Handler", (_Handler,), {"site": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.callback_url = f"{self.base}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def frame_url(self, frames: dict[str, str]) -> str:
        """The /frame page embedding each {name: url}; a url of PAGE_URL stands for the URL the
        browser's page is on when the `frame_check` step runs."""
        return f"{self.base}/frame?" + "&".join(
            f"name={quote(n)}&src={s if s == PAGE_URL else quote(s, safe='')}" for n, s in frames.items())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
