"""Off-the-shelf MCP clients through Doorman, as people run them, each signing in with its own
OAuth run: dynamic client registration, PKCE, and the person's sign-in and consent pages (walked
by the test's browser when the client "opens" the authorization URL: its `BROWSER` is a script that
hands the URL to the test).

- `mcp-remote` 0.15.1 (the stdio bridge desktop clients use for remote servers), driven by the
  official Python SDK's stdio client; a second run reuses the stored sign-in, no browser;
- the MCP Inspector CLI 2.12.0 (`mcp-inspector --cli`, on the TypeScript client 2.3.1).

Both reach server-everything through Doorman, and every call is recorded under the person and the
client that registered itself.
"""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from conftest import DOORMAN_BIN
from oauth import Browser, accounts_doorman, add_user
from procs import NODE, PEERS, free_port

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse battery staple"
MCP_REMOTE = PEERS / "node_modules" / ".bin" / "mcp-remote"
INSPECTOR = PEERS / "node_modules" / ".bin" / "mcp-inspector"


@pytest.fixture
def doorman(everything):
    d = accounts_doorman("real-clients", [{"name": "everything", "url": everything.url}])
    add_user(d, "alice", PASSWORD)
    yield d
    d.stop()


def browser_script(home: Path) -> tuple[Path, Path]:
    """A `BROWSER` that writes each URL it is asked to open to a file, one per line."""
    opened = home / "opened.txt"
    script = home / "browser.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    script.chmod(0o755)
    return script, opened


def sign_in_when_opened(d, opened: Path, seen: int = 0, timeout: float = 60) -> str:
    """Waits for the client to open an authorization URL, walks it as alice (sign-in, consent),
    and delivers the code to the client's loopback callback; returns the URL it opened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = opened.read_text().split() if opened.exists() else []
        if len(lines) > seen:
            url = lines[seen]
            b = Browser(d)
            try:
                back = b.authorize(url, "alice", PASSWORD)
            finally:
                b.close()
            assert back.startswith(("http://localhost:", "http://127.0.0.1:")) and "code=" in back, back
            httpx2.get(back, timeout=30)
            return url
        time.sleep(0.1)
    raise AssertionError("the client never opened an authorization URL")


def audit(d) -> list[dict]:
    out = subprocess.run([str(DOORMAN_BIN), "audit", "--json", "--config", str(d.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_mcp_remote_signs_in_once_then_relays_a_desktop_clients_calls(doorman, tmp_path):
    script, opened = browser_script(tmp_path)
    port = free_port()
    params = StdioServerParameters(
        command=str(NODE), args=[str(MCP_REMOTE), doorman.url, str(port), "--transport", "http-only"],
        env={**os.environ, "HOME": str(tmp_path), "BROWSER": str(script)}, cwd=str(tmp_path))

    async def session(expect_sign_in: bool) -> tuple[list[str], str]:
        async with anyio.create_task_group() as tg:
            if expect_sign_in:
                tg.start_soon(anyio.to_thread.run_sync, lambda: sign_in_when_opened(doorman, opened))
            with anyio.fail_after(90):
                async with Client(stdio_client(params)) as c:
                    tools = [t.name for t in (await c.list_tools()).tools]
                    r = await c.call_tool("everything_echo", {"message": "via mcp-remote"})
        return tools, r.content[0].text

    tools, echoed = anyio.run(session, True)
    assert "everything_echo" in tools and echoed == "Echo: via mcp-remote"
    url = opened.read_text().split()[0]
    assert url.startswith(f"{doorman.base}/oauth/authorize?") and "code_challenge_method=S256" in url
    # Remembered: the second run signs in with the stored tokens, and opens no browser.
    tools, echoed = anyio.run(session, False)
    assert echoed == "Echo: via mcp-remote"
    assert len(opened.read_text().split()) == 1
    calls = [r for r in audit(doorman) if r.get("name") == "everything_echo"]
    assert len(calls) == 2 and all(r["person"] == "alice" for r in calls), calls
    assert len({r["client_id"] for r in calls}) == 1


def test_the_inspector_cli_signs_in_and_calls_through_doorman(doorman, tmp_path):
    script, opened = browser_script(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path), "BROWSER": str(script), "MCP_AUTO_OPEN_ENABLED": "true",
           "MCP_INSPECTOR_SECRET_STORE": "memory"}
    walked = {}
    t = threading.Thread(target=lambda: walked.setdefault("url", sign_in_when_opened(doorman, opened)))
    t.start()
    out = subprocess.run([str(NODE), str(INSPECTOR), "--cli", doorman.url, "--method", "tools/call",
                          "--tool-name", "everything_echo", "--tool-arg", "message=from the inspector"],
                         env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    t.join(timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["content"][0]["text"] == "Echo: from the inspector", result
    assert walked["url"].startswith(f"{doorman.base}/oauth/authorize?")
    (call,) = [r for r in audit(doorman) if r.get("name") == "everything_echo"]
    assert call["person"] == "alice" and call["outcome"] == "success", call
