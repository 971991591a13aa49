"""Real MCP clients through Doorman: the Python SDK on both protocol generations, and the
TypeScript SDK on the stateful one. Both upstreams are real servers."""

import json
import os
import subprocess

import anyio
import pytest
from mcp import Client

from procs import NODE, ROOT

EVERYTHING_TOOLS = ["echo", "trigger-long-running-operation", "get-sum"]
PY_TOOLS = ["add", "slow", "progress", "log"]


async def exercise(url: str, mode: str) -> dict:
    """Everything a user does in a session; returns what they saw."""
    seen = {}
    logs = []

    async def on_log(params):
        logs.append(params.data)

    kwargs = {"logging_callback": on_log}
    if mode != "legacy":
        kwargs["log_level"] = "info"
    async with Client(url, mode=mode, **kwargs) as c:
        seen["version"] = c.protocol_version
        seen["tools"] = [t.name for t in (await c.list_tools()).tools]
        seen["tools_again"] = [t.name for t in (await c.list_tools()).tools]
        r = await c.call_tool("everything_echo", {"message": "through doorman"})
        seen["echo"] = (r.content[0].text, r.is_error)
        r = await c.call_tool("py_add", {"a": 2, "b": 3})
        seen["add"] = r.content[0].text
        progress = []

        async def on_progress(p, total, message):
            progress.append((p, total))

        r = await c.call_tool("everything_trigger-long-running-operation", {"duration": 1, "steps": 3},
                              progress_callback=on_progress)
        seen["long"] = (r.content[0].text, list(progress))
        progress.clear()
        r = await c.call_tool("py_progress", {"steps": 4}, progress_callback=on_progress)
        seen["py_progress"] = (r.content[0].text, list(progress))
        r = await c.call_tool("py_log", {"message": "hello log"})
        seen["log"] = (r.content[0].text, list(logs))
        resources = [str(x.uri) for x in (await c.list_resources()).resources]
        seen["resources"] = resources
        read = await c.read_resource("py+fixture://readme")
        seen["read_py"] = (str(read.contents[0].uri), read.contents[0].text)
        doc = next(u for u in resources if u.startswith("everything+demo://resource/static/document/"))
        read = await c.read_resource(doc)
        seen["read_everything"] = (str(read.contents[0].uri), read.contents[0].text[:1])
        seen["prompts"] = [p.name for p in (await c.list_prompts()).prompts]
        p = await c.get_prompt("py_greet", {"name": "Ada"})
        seen["greet"] = p.messages[0].content.text
        p = await c.get_prompt("everything_simple-prompt", {})
        seen["simple_prompt"] = p.messages[0].content.text
        r = await c.call_tool("nowhere_tool", {})
        seen["unknown_tool"] = (r.is_error, r.content[0].text)
        # Tool results whose URIs Doorman rewrites (parsed), and one it passes through as written.
        r = await c.call_tool("everything_get-resource-links", {"count": 2})
        seen["links"] = [str(b.uri) for b in r.content if b.type == "resource_link"]
        read = await c.read_resource(seen["links"][0])
        seen["link_read"] = str(read.contents[0].uri)
        r = await c.call_tool("everything_get-resource-reference", {"resourceType": "Text", "resourceId": 2})
        seen["embedded"] = [str(b.resource.uri) for b in r.content if b.type == "resource"]
        r = await c.call_tool("everything_get-structured-content", {"location": "Chicago"})
        seen["structured"] = (r.structured_content, r.is_error, r.content[0].type)
    return seen


def check_session(seen: dict, version: str) -> None:
    assert seen["version"] == version
    tools = seen["tools"]
    for t in EVERYTHING_TOOLS:
        assert f"everything_{t}" in tools
    for t in PY_TOOLS:
        assert f"py_{t}" in tools
    # Deterministic: config order of upstreams, each upstream's own order, the same every time.
    assert seen["tools_again"] == tools
    assert max(i for i, t in enumerate(tools) if t.startswith("everything_")) < min(
        i for i, t in enumerate(tools) if t.startswith("py_"))
    assert seen["echo"] == ("Echo: through doorman", False)
    assert seen["add"] == "5"
    text, progress = seen["long"]
    assert "completed" in text
    assert progress == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
    assert seen["py_progress"] == ("done 4", [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)])
    assert seen["log"][0] == "logged"
    assert "hello log" in seen["log"][1], "the upstream's log notification reaches the client"
    assert "py+fixture://readme" in seen["resources"]
    assert seen["read_py"] == ("py+fixture://readme", "py fixture readme")
    assert seen["read_everything"][0].startswith("everything+demo://")
    assert "py_greet" in seen["prompts"] and "everything_simple-prompt" in seen["prompts"]
    assert seen["greet"] == "Hello, Ada!"
    assert seen["simple_prompt"] == "This is a simple prompt without arguments."
    assert seen["unknown_tool"] == (True, "Unknown tool: nowhere_tool")
    # A link or an embedded resource in a tool's result names the resource through Doorman, and
    # reading it that way works; a result with neither comes as the upstream wrote it.
    assert len(seen["links"]) == 2, seen["links"]
    assert all(u.startswith("everything+demo://resource/dynamic/") for u in seen["links"]), seen["links"]
    assert seen["link_read"] == seen["links"][0]
    assert seen["embedded"] == ["everything+demo://resource/dynamic/text/2"]
    assert seen["structured"] == ({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82},
                                  False, "text")


def test_python_client_on_the_stateless_revision(gateway):
    seen = anyio.run(exercise, gateway.url, "auto")
    check_session(seen, "2026-07-28")


def test_python_client_on_the_stateful_revision(gateway):
    seen = anyio.run(exercise, gateway.url, "legacy")
    check_session(seen, "2025-11-25")


def test_typescript_client_on_the_stateful_revision(gateway):
    env = {
        **os.environ,
        "TS_ECHO_TOOL": "everything_echo",
        "TS_PROGRESS_TOOL": "everything_trigger-long-running-operation",
        "TS_PROMPT_NAME": "py_greet",
        "TS_PROMPT_ARGS": json.dumps({"name": "TS"}),
        "TS_RESOURCE_URI": "py+fixture://readme",
    }
    out = subprocess.run([str(NODE), str(ROOT / "tests/clients/ts_client.mjs"), gateway.url],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["serverInfo"]["name"] == "doorman"
    assert seen["protocolVersion"] == "2025-11-25"
    assert seen["sessionId"]
    assert "everything_echo" in seen["tools"] and "py_add" in seen["tools"]
    assert seen["echo"]["content"][0]["text"] == "Echo: hello from ts"
    assert [n["progress"] for n in seen["progress"]["notifications"]] == [1, 2, 3]
    assert seen["read"]["contents"][0]["text"] == "py fixture readme"
    assert seen["prompt"]["messages"][0]["content"]["text"] == "Hello, TS!"


def test_clients_of_both_generations_at_once(gateway):
    """Stateful and stateless conversations side by side, concurrently, keep their answers apart."""

    async def both():
        results = {}

        async def one(mode, n):
            async with Client(gateway.url, mode=mode) as c:
                r = await c.call_tool("py_add", {"a": n, "b": 1000})
                results[(mode, n)] = r.content[0].text

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(one, "legacy" if n % 2 else "auto", n)
        return results

    results = anyio.run(both)
    assert results == {("legacy" if n % 2 else "auto", n): str(n + 1000) for n in range(6)}


def test_each_upstream_speaks_its_own_generation(gateway):
    anyio.run(exercise, gateway.url, "legacy")
    log = gateway.log()
    assert "upstream=py era=Modern" in log, "the Python SDK upstream speaks 2026-07-28"
    assert "upstream=everything era=Legacy" in log, "server-everything only speaks the stateful revisions"
