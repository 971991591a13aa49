"""What a person sees of an upstream tied to a resource before and after they connect it, and
who is told when that changes.

Real peers as in test_layer2.py: `oidc-provider` as the resource's authorization server, the
protected upstream on the Python SDK (tests/peers/resource_upstream.py), which here lists a
`private_report` tool to one person only (`--private-tool`) and accepts a service token for
listing (`--listing-token`), and the Python SDK as the MCP client on both revisions.
"""

from __future__ import annotations

import secrets

import anyio
import pytest

from test_layer2 import client, connect_once, doorman_token, envs, follow_connect, link_in, text_of  # noqa: F401

pytestmark = pytest.mark.timeout(240)

ALICE_SUB = "sub-alice-work"
BUILTINS = {"doorman_whoami", "doorman_connect", "doorman_disconnect", "doorman_use_account"}


async def tools_of(e, token: str, mode: str = "legacy") -> dict[str, object]:
    http, c = client(e, token, mode=mode)
    async with http, c:
        return {t.name: t for t in (await c.list_tools()).tools if t.name not in BUILTINS}


def names(e, token: str, mode: str = "legacy") -> set[str]:
    return set(anyio.run(tools_of, e, token, mode))


def test_before_connecting_a_person_sees_one_connect_entry_and_never_another_persons_list(envs):
    e = envs("cat-entry", binding="user", notes_kw={"private_tool": ALICE_SUB})
    alice, bob = doorman_token(e, "alice"), doorman_token(e, "bob")

    # Nobody connected: the upstream lists nothing without a token, so each person sees the
    # entry that connects them, on both revisions.
    assert names(e, bob) == {"notes_connect"}
    entry = anyio.run(tools_of, e, bob, "2026-07-28")["notes_connect"]
    assert "Connect your Notes account" in entry.description

    connect_once(e, alice)
    assert names(e, alice) == {"notes_whoami", "notes_write_note", "notes_read_note", "notes_private_report"}
    # Alice's list (with her private tool) is hers alone: Bob, not connected, still sees the entry.
    assert names(e, bob) == {"notes_connect"}

    async def bob_connects():
        http, c = client(e, bob)
        async with http, c:
            asked = await c.call_tool("notes_connect", {})
            assert asked.is_error and "Connect your Notes account" in text_of(asked)
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "bob", link_in(text_of(asked)), "bob-notes"))
            done = await c.call_tool("notes_connect", {})
            assert not done.is_error, text_of(done)
            said = text_of(done)
            assert "is connected" in said and "notes_whoami" in said and "private_report" not in said

    anyio.run(bob_connects)
    assert names(e, bob) == {"notes_whoami", "notes_write_note", "notes_read_note"}


def test_a_declared_catalog_is_shown_and_its_tools_prompt_to_connect(envs):
    catalog = {"tools": [
        {"name": "whoami", "title": "Who am I at Notes", "description": "Who Notes says you are"},
        {"name": "read_note", "description": "Read one of your notes",
         "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    ]}
    e = envs("cat-declared", binding="user", upstream_kw={"catalog": catalog})
    bob = doorman_token(e, "bob")
    listed = anyio.run(tools_of, e, bob)
    assert set(listed) == {"notes_whoami", "notes_read_note"}
    assert listed["notes_whoami"].description == "Who Notes says you are"
    assert listed["notes_read_note"].input_schema["required"] == ["name"]

    async def call():
        http, c = client(e, bob)
        async with http, c:
            r = await c.call_tool("notes_whoami", {})
            assert r.is_error and "Connect your Notes account" in text_of(r)

    anyio.run(call)
    # Connected, Bob sees what the upstream lists for him, not the declared list.
    connect_once(e, bob, "bob", "bob-notes")
    assert names(e, bob) == {"notes_whoami", "notes_write_note", "notes_read_note"}


def test_a_catalog_credential_lists_but_never_acts_for_anyone(envs):
    service = "svc-" + secrets.token_urlsafe(24)
    e = envs("cat-credential", binding="user",
             notes_kw={"private_tool": ALICE_SUB, "listing_token": service},
             upstream_kw={"catalog": {"credential": {"env": "NOTES_CATALOG"}}},
             env={"NOTES_CATALOG": service})
    bob = doorman_token(e, "bob")
    # The service account's list: the public tools, not Alice's private one, no connect entry.
    assert names(e, bob) == {"notes_whoami", "notes_write_note", "notes_read_note"}

    async def call():
        http, c = client(e, bob)
        async with http, c:
            r = await c.call_tool("notes_whoami", {})
            # A prompt to connect, never an answer as the service account.
            assert r.is_error and "Connect your Notes account" in text_of(r), text_of(r)
            assert "service:catalog" not in text_of(r)

    anyio.run(call)
    assert service not in e.d.log()


def test_connecting_tells_that_persons_open_sessions_and_nobody_else(envs):
    e = envs("cat-changed", binding="user")
    alice, bob = doorman_token(e, "alice"), doorman_token(e, "bob")
    heard: dict[str, list[str]] = {"alice": [], "bob": []}

    def recorder(who: str):
        async def on_message(msg):
            method = getattr(getattr(msg, "root", msg), "method", None)
            if method and method.endswith("list_changed"):
                heard[who].append(method)
        return on_message

    async def run():
        ha, ca = client(e, alice, message_handler=recorder("alice"))
        hb, cb = client(e, bob, message_handler=recorder("bob"))
        async with ha, ca, hb, cb:
            assert "notes_connect" in {t.name for t in (await ca.list_tools()).tools}  # opens the GET stream
            await cb.list_tools()
            asked = await ca.call_tool("notes_connect", {})
            await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link_in(text_of(asked))))
            with anyio.fail_after(10):
                while "notifications/tools/list_changed" not in heard["alice"]:
                    await anyio.sleep(0.05)
            assert "notes_whoami" in {t.name for t in (await ca.list_tools()).tools}
            # Bob's session is open on the same node; his list did not change, and he hears
            # nothing (his stream carries Alice's notification if anything leaks; allow it time).
            await anyio.sleep(1.0)
            assert heard["bob"] == []

    anyio.run(run)


def test_a_2026_client_listening_hears_that_its_persons_tools_changed_and_nobody_elses(envs):
    from mcp.shared.subscriptions import ToolsListChanged

    e = envs("cat-listen", binding="user")
    alice, bob = doorman_token(e, "alice"), doorman_token(e, "bob")
    heard: dict[str, list] = {"alice": [], "bob": []}

    async def listen(who: str, token: str, ready: anyio.Event):
        http, c = client(e, token, mode="2026-07-28")
        async with http, c:
            async with c.listen(tools_list_changed=True) as sub:
                assert sub.honored.tools_list_changed
                ready.set()
                async for event in sub:
                    heard[who].append(event)

    async def run():
        async with anyio.create_task_group() as tg:
            ready = {who: anyio.Event() for who in heard}
            tg.start_soon(listen, "alice", alice, ready["alice"])
            tg.start_soon(listen, "bob", bob, ready["bob"])
            for r in ready.values():
                await r.wait()
            http, c = client(e, alice, mode="2026-07-28")
            async with http, c:
                asked = await c.call_tool("notes_connect", {})
                await anyio.to_thread.run_sync(lambda: follow_connect(e, "alice", link_in(text_of(asked))))
            with anyio.fail_after(10):
                while ToolsListChanged() not in heard["alice"]:
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)  # time for anything leaking to Bob's stream
            tg.cancel_scope.cancel()
        assert heard["bob"] == []

    anyio.run(run)
