"""Change notifications through Doorman, with the official Python SDK client and the events fixture
(tests/fixtures/upstream_events.py, the Python SDK server with an event store):

- a 2026-07-28 client's `subscriptions/listen`: acknowledged with what Doorman honours, then
  resource updates (renamed as the client knows them) and list changes, from a 2026-07-28
  upstream (its own `subscriptions/listen`) and from an upstream of the handshake revisions only
  (a session of its own with `resources/subscribe` and its GET stream); nothing the client did
  not ask for;
- a stateful client's GET stream: when the upstream drops its GET stream, Doorman opens it again
  with `Last-Event-ID`, and what the upstream sent meanwhile still arrives.
"""

import json

import anyio
import pytest
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

from conftest import Doorman
from procs import FIXTURES, VENV_PYTHON, _start_http, free_port

pytestmark = pytest.mark.timeout(120)


def start_events(legacy: bool):
    port = free_port()
    proc = _start_http("events-legacy" if legacy else "events-modern", [VENV_PYTHON, FIXTURES / "upstream_events.py"],
                       port, {"EVENTS_LEGACY": "1" if legacy else "0", "PYTHONUNBUFFERED": "1"}, "/mcp", 20)
    proc.url = f"http://127.0.0.1:{port}/mcp"
    return proc


@pytest.fixture(scope="module")
def doorman():
    modern, legacy = start_events(False), start_events(True)
    d = Doorman("doorman-events", [{"name": "ev", "url": modern.url}, {"name": "old", "url": legacy.url}],
                env={"RUST_LOG": "doorman=debug"})
    yield d
    d.stop()
    modern.stop()
    legacy.stop()


def text(r) -> str:
    return "\n".join(c.text for c in r.content if getattr(c, "type", "") == "text")


@pytest.mark.parametrize("upstream", ["ev", "old"])
def test_a_2026_client_hears_the_updates_it_listens_for_and_nothing_else(doorman, upstream):
    a, b = f"{upstream}+events://a", f"{upstream}+events://b"

    async def run():
        async with Client(doorman.url, mode="2026-07-28") as c, Client(doorman.url, mode="2026-07-28") as other:
            async with c.listen(resource_subscriptions=[a, "nope+events://a"], tools_list_changed=True) as sub:
                # Honoured: the URI an upstream serves, and the list changes; not the URI that
                # names no upstream.
                assert list(sub.honored.resource_subscriptions) == [a]
                assert sub.honored.tools_list_changed and not sub.honored.prompts_list_changed
                events = []
                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        async def collect():
                            async for event in sub:
                                events.append(event)
                                if any(isinstance(e, ToolsListChanged) for e in events):
                                    tg.cancel_scope.cancel()
                        tg.start_soon(collect)
                        # b is not listened to; a is; then the tool list changes.
                        await other.call_tool(f"{upstream}_touch", {"uri": "events://b"})
                        await other.call_tool(f"{upstream}_touch", {"uri": "events://a"})
                        while not events:
                            await anyio.sleep(0.05)
                        await other.call_tool(f"{upstream}_change_tools", {})
            assert events[0] == ResourceUpdated(uri=a), events
            assert ResourceUpdated(uri=b) not in events

    anyio.run(run)


def test_a_dropped_upstream_stream_is_reopened_and_nothing_sent_meanwhile_is_lost(doorman):
    updates: list[str] = []

    async def on_message(msg):
        root = getattr(msg, "root", msg)
        if getattr(root, "method", None) == "notifications/resources/updated":
            updates.append(str(root.params.uri))

    async def wait_for(n: int):
        with anyio.fail_after(20):
            while len(updates) < n:
                await anyio.sleep(0.05)

    async def run():
        async with Client(doorman.url, mode="legacy", message_handler=on_message) as c:
            await c.subscribe_resource("old+events://a")
            await c.list_tools()
            # The GET stream (client to Doorman, Doorman to the upstream) carries the first update.
            for _ in range(50):
                await c.call_tool("old_touch", {"uri": "events://a"})
                try:
                    with anyio.fail_after(0.5):
                        while not updates:
                            await anyio.sleep(0.05)
                    break
                except TimeoutError:
                    continue
            assert updates, "no update reached the client"
            seen = len(updates)
            # The upstream drops its GET stream to Doorman, then announces a change at once:
            # it arrives through the reopened stream (Last-Event-ID), not lost.
            dropped = text(await c.call_tool("old_drop_streams", {}))
            assert dropped.startswith("dropped") and dropped != "dropped 0", dropped
            await c.call_tool("old_touch", {"uri": "events://a"})
            await wait_for(seen + 1)
            assert set(updates) == {"old+events://a"}
            opens = json.loads(text(await c.call_tool("old_stream_opens", {})))
            assert any(o["last_event_id"] for o in opens), opens

    anyio.run(run)
