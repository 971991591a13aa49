"""Upstreams that ask the client something (elicitation, sampling, roots) work through Doorman as
they do directly, on both protocol generations and across them:

- a stateful client and a stateful upstream (server-everything, and the asks fixture made to speak
  only the handshake revisions): the upstream's requests are relayed on the client's stream with
  Doorman's ids, and the answers go back to the upstream that asked;
- a stateful client and a 2026-07-28 upstream (the asks fixture): each `InputRequiredResult` is
  asked of the client as requests, and the call retried with the answers;
- a 2026-07-28 client and a 2026-07-28 upstream: the `InputRequiredResult` passes through with the
  upstream's `requestState` sealed inside Doorman's own.

Every comparison runs the same official SDK client, with the same handlers, directly against the
upstream and through Doorman."""

import json
import subprocess
import threading
import time

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client

from conftest import ACCEPT_BOTH, MODERN, Doorman, initialize, modern_headers, modern_request, rpc_json, session_headers
from procs import FIXTURES, NODE, ROOT, VENV_PYTHON, _start_http, free_port

ROOTS = ["file:///work/project-a", "file:///work/project-b"]


def start_asks(legacy: bool):
    port = free_port()
    name = "asks-legacy" if legacy else "asks-modern"
    proc = _start_http(name, [VENV_PYTHON, FIXTURES / "upstream_asks.py"], port,
                       {"ASKS_LEGACY": "1" if legacy else "0", "PYTHONUNBUFFERED": "1"}, "/mcp", 20)
    proc.url = f"http://127.0.0.1:{port}/mcp"
    return proc


@pytest.fixture(scope="module")
def asks_modern():
    p = start_asks(legacy=False)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def asks_legacy():
    p = start_asks(legacy=True)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def doorman(everything, asks_modern, asks_legacy):
    d = Doorman("doorman-asks", [
        {"name": "everything", "url": everything.url},
        {"name": "asks", "url": asks_modern.url},
        {"name": "old", "url": asks_legacy.url, "timeout": "3s"},
    ], env={"RUST_LOG": "doorman=debug"})
    yield d
    d.stop()


class Person:
    """The handlers of a client whose person answers everything, recording what was asked."""

    def __init__(self):
        self.asked = []

    async def elicit(self, ctx, params):
        self.asked.append(("elicitation", params.message))
        if getattr(params, "mode", "form") == "url":
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def sample(self, ctx, params):
        text = params.messages[0].content.text
        self.asked.append(("sampling", text))
        return types.CreateMessageResult(role="assistant", model="test-model", stop_reason="endTurn",
                                         content=types.TextContent(type="text", text=f"teal (re: {text})"))

    async def roots(self, ctx):
        self.asked.append(("roots", None))
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in ROOTS])


def client(url, mode, person, caps=("elicitation", "sampling", "roots")):
    kwargs = {}
    if "elicitation" in caps:
        kwargs["elicitation_callback"] = person.elicit
    if "sampling" in caps:
        kwargs["sampling_callback"] = person.sample
    if "roots" in caps:
        kwargs["list_roots_callback"] = person.roots
    return Client(url, mode=mode, **kwargs)


def flat(e: BaseException) -> str:
    """An exception's text, with every exception a group holds."""
    if isinstance(e, BaseExceptionGroup):
        return " | ".join(flat(x) for x in e.exceptions)
    return str(e)


def texts(result) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", "") == "text"]


async def run_calls(url, mode, calls, prefix="", caps=("elicitation", "sampling", "roots")):
    """Calls each (tool, args) in one session; returns (tool names, [(texts, is_error)], asked)."""
    person = Person()
    out = []
    async with client(url, mode, person, caps) as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        for name, args in calls:
            r = await c.call_tool(prefix + name, args)
            out.append((texts(r), r.is_error))
    return tools, out, person.asked


EVERYTHING_CALLS = [
    ("trigger-elicitation-request", {}),
    ("trigger-sampling-request", {"prompt": "pick a colour", "maxTokens": 10}),
    ("get-roots-list", {}),
]
ASKS_CALLS = [
    ("greet_asked", {}),
    ("colour", {}),
    ("roots_seen", {}),
    ("both", {}),
]


def test_a_stateful_upstream_asks_a_stateful_client_through_doorman(doorman, everything):
    direct = anyio.run(run_calls, everything.url, "legacy", EVERYTHING_CALLS)
    through = anyio.run(run_calls, doorman.url, "legacy", EVERYTHING_CALLS, "everything_")
    # Doorman declares the client's capabilities, so the upstream lists the tools that need them.
    for t in ("trigger-elicitation-request", "trigger-sampling-request", "get-roots-list"):
        assert t in direct[0]
        assert f"everything_{t}" in through[0], through[0]
    assert through[1] == direct[1], "the same results through Doorman as directly"
    assert through[2] == direct[2], "the person was asked the same things"
    elicited, sampled, roots = through[1]
    assert "Name: Ada" in elicited[0][1] and not elicited[1]
    assert "teal (re: Resource trigger-sampling-request context: pick a colour)" in sampled[0][0]
    assert all(r in roots[0][0] for r in ROOTS)


def test_the_typescript_sdk_client_is_asked_the_same_through_doorman(doorman, everything):
    """The TypeScript SDK's client (1.32.2) with its own elicitation, sampling and roots handlers:
    server-everything's asking tools give the same results through Doorman as directly."""

    def run(url, prefix):
        out = subprocess.run([str(NODE), str(ROOT / "tests/clients/ts_asks.mjs"), url, prefix],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    direct, through = run(everything.url, ""), run(doorman.url, "everything_")
    assert through["results"] == direct["results"]
    assert through["asked"] == direct["asked"]
    assert "Name: Ada" in "".join(through["results"][0][0])
    assert all(r in through["results"][2][0][0] for r in ROOTS)


def test_the_upstream_is_told_only_what_the_client_declared(doorman, everything):
    """A client without sampling or roots: the upstream does not list the tools that need them,
    through Doorman as directly."""
    calls = [("trigger-elicitation-request", {})]
    direct = anyio.run(run_calls, everything.url, "legacy", calls, "", ("elicitation",))
    through = anyio.run(run_calls, doorman.url, "legacy", calls, "everything_", ("elicitation",))
    for t in ("trigger-sampling-request", "get-roots-list"):
        assert t not in direct[0]
        assert f"everything_{t}" not in through[0]
    assert through[1] == direct[1]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_a_2026_upstream_asks_clients_of_both_generations(doorman, asks_modern, mode):
    direct = anyio.run(run_calls, asks_modern.url, mode, ASKS_CALLS)
    through = anyio.run(run_calls, doorman.url, mode, ASKS_CALLS, "asks_")
    assert through[1] == direct[1]
    # One round's input requests are a map: asked in any order, each once.
    assert sorted(through[2]) == sorted(direct[2])
    assert through[1] == [
        (["Hello, Ada!"], False),
        (["the model said teal (re: Name a colour) (test-model)"], False),
        ([",".join(ROOTS)], False),
        (["Ada likes teal (re: Name a colour)"], False),
    ]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_a_stateful_only_upstream_asks_in_the_middle_of_a_call(doorman, asks_legacy, mode):
    """The asks fixture on the handshake revisions: its questions arrive mid-call. A stateful
    client is asked them on its stream. A 2026-07-28 client is asked them with
    `InputRequiredResult`s while Doorman keeps the upstream's call open, and its retries carry the
    answers to it: the same results as a stateful client gets directly (the fixture, speaking only
    the handshake revisions, cannot be reached by a 2026-07-28 client directly)."""
    direct = anyio.run(run_calls, asks_legacy.url, "legacy", ASKS_CALLS)
    through = anyio.run(run_calls, doorman.url, mode, ASKS_CALLS, "old_")
    assert through[1] == direct[1]
    assert sorted(through[2]) == sorted(direct[2])
    assert through[1][0] == (["Hello, Ada!"], False)


def test_the_upstream_state_is_sealed_and_checked(doorman, http):
    """Raw 2026-07-28 requests: the client sees only Doorman's sealed state; an altered one, or one
    presented for another tool or by a state the client wrote, never reaches the upstream."""
    caps = {"elicitation": {"form": {}}}

    def call(name, rid, extra=None):
        req = modern_request("tools/call", {"name": name, "arguments": {}, **(extra or {})}, rid=rid)
        req["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps
        return http.post(doorman.url, headers=modern_headers("tools/call", name), json=req)

    first = rpc_json(call("asks_greet_asked", 1))["result"]
    assert first["resultType"] == "input_required"
    state = first["requestState"]
    assert state.startswith("doorman2."), state
    key = next(iter(first["inputRequests"]))
    answers = {"inputResponses": {key: {"action": "accept", "content": {"name": "Grace"}}}}

    def refused(r):
        msg = rpc_json(r)
        assert msg.get("error", {}).get("data", {}).get("reason") == "invalid_request_state", msg
        assert r.status_code == 400

    tampered = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
    refused(call("asks_greet_asked", 2, {**answers, "requestState": tampered}))
    refused(call("asks_both", 3, {**answers, "requestState": state}))
    refused(call("asks_greet_asked", 4, {**answers, "requestState": "eyJ3cml0dGVuIjoiYnkgdGhlIGNsaWVudCJ9"}))
    done = rpc_json(call("asks_greet_asked", 5, {**answers, "requestState": state}))
    assert done["result"]["content"][0]["text"] == "Hello, Grace!"


def test_a_parked_call_answers_only_its_own_retry_and_only_once(doorman, http):
    """Raw 2026-07-28 requests to the handshake-only upstream: the call waits upstream while the
    client holds Doorman's sealed state; the state is refused for another tool, altered, or used
    a second time, and the right retry completes the call."""
    caps = {"elicitation": {"form": {}}}

    def call(name, rid, extra=None):
        req = modern_request("tools/call", {"name": name, "arguments": {}, **(extra or {})}, rid=rid)
        req["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps
        return http.post(doorman.url, headers=modern_headers("tools/call", name), json=req)

    first = rpc_json(call("old_greet_asked", 1))["result"]
    assert first["resultType"] == "input_required", first
    state = first["requestState"]
    assert state.startswith("doorman3."), state
    (key, asked), = first["inputRequests"].items()
    assert asked["method"] == "elicitation/create" and asked["params"]["message"] == "What is your name?"
    answers = {"inputResponses": {key: {"action": "accept", "content": {"name": "Grace"}}}}

    def refused(r):
        msg = rpc_json(r)
        assert msg.get("error", {}).get("data", {}).get("reason") == "invalid_request_state", msg
        assert r.status_code == 400

    refused(call("old_both", 2, {**answers, "requestState": state}))
    tampered = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
    refused(call("old_greet_asked", 3, {**answers, "requestState": tampered}))
    done = rpc_json(call("old_greet_asked", 4, {**answers, "requestState": state}))
    assert done["result"]["content"][0]["text"] == "Hello, Grace!"
    refused(call("old_greet_asked", 5, {**answers, "requestState": state}))


def sse_messages(lines):
    for line in lines:
        if line.startswith("data:"):
            yield json.loads(line[5:])


def test_a_relayed_request_and_its_answer_keep_to_their_session(doorman, http):
    """Raw stateful sessions: the upstream's question reaches the session whose call asked it,
    under Doorman's own id; an answer posted on another session, or with an id nothing waits
    for, changes nothing; the right answer completes the call."""
    sid = initialize_with(http, doorman.url, {"elicitation": {}})
    other = initialize_with(http, doorman.url, {"elicitation": {}})
    got = {}

    def call():
        with httpx2.Client(timeout=60) as h:
            with h.stream("POST", doorman.url, headers=session_headers(sid), json={
                "jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "old_greet_asked", "arguments": {}},
            }) as r:
                for msg in sse_messages(r.iter_lines()):
                    if msg.get("method") == "elicitation/create":
                        got["ask"] = msg
                    elif msg.get("id") == 7:
                        got["final"] = msg
                        return

    t = threading.Thread(target=call)
    t.start()
    deadline = time.time() + 20
    while "ask" not in got and time.time() < deadline:
        time.sleep(0.05)
    ask = got["ask"]
    assert ask["params"]["message"] == "What is your name?"
    answer = {"jsonrpc": "2.0", "id": ask["id"], "result": {"action": "accept", "content": {"name": "Mallory"}}}
    assert http.post(doorman.url, headers=session_headers(other), json=answer).status_code == 202
    wrong_id = {**answer, "id": 999999}
    assert http.post(doorman.url, headers=session_headers(sid), json=wrong_id).status_code == 202
    time.sleep(0.3)
    assert "final" not in got, "neither answer reached the upstream"
    right = {**answer, "result": {"action": "accept", "content": {"name": "Ada"}}}
    assert http.post(doorman.url, headers=session_headers(sid), json=right).status_code == 202
    t.join(20)
    assert got["final"]["result"]["content"][0]["text"] == "Hello, Ada!"


def initialize_with(http, url, caps, version="2025-11-25"):
    r = http.post(url, headers=ACCEPT_BOTH, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": caps, "clientInfo": {"name": "raw", "version": "0"}},
    })
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    assert http.post(url, headers=session_headers(sid, version),
                     json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
    return sid


def test_a_person_may_take_longer_than_the_upstream_timeout(doorman, http):
    """The `old` upstream times out after 3 s, but a person answering for 4 s does not make the
    call fail: time spent asking the client does not count."""
    sid = initialize_with(http, doorman.url, {"elicitation": {}})
    got = {}

    def call():
        with httpx2.Client(timeout=60) as h:
            with h.stream("POST", doorman.url, headers=session_headers(sid), json={
                "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "old_greet_asked", "arguments": {}},
            }) as r:
                for msg in sse_messages(r.iter_lines()):
                    if msg.get("method") == "elicitation/create":
                        got["ask"] = msg
                    elif msg.get("id") == 3:
                        got["final"] = msg
                        return

    t = threading.Thread(target=call)
    t.start()
    deadline = time.time() + 20
    while "ask" not in got and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(4)
    answer = {"jsonrpc": "2.0", "id": got["ask"]["id"], "result": {"action": "accept", "content": {"name": "Slow"}}}
    assert http.post(doorman.url, headers=session_headers(sid), json=answer).status_code == 202
    t.join(20)
    assert got["final"]["result"]["content"][0]["text"] == "Hello, Slow!"


def test_a_cancelled_call_stops_and_its_upstream_is_told(doorman, http):
    sid = initialize_with(http, doorman.url, {})
    got = {}

    def call():
        with httpx2.Client(timeout=60) as h:
            r = h.post(doorman.url, headers=session_headers(sid), json={
                "jsonrpc": "2.0", "id": "w1", "method": "tools/call",
                "params": {"name": "old_wait", "arguments": {"tag": "first", "seconds": 30}},
            })
            got["final"] = rpc_json(r)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.8)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "w1", "reason": "no longer needed"}}
    assert http.post(doorman.url, headers=session_headers(sid), json=cancel).status_code == 202
    t.join(20)
    # Cancelled, not timed out (-32010 after the upstream's 3 s) nor finished.
    assert got["final"]["error"]["code"] == -32013, got
    # The upstream heard the cancellation (its handler was interrupted).
    deadline = time.time() + 10
    seen = ""
    while time.time() < deadline:
        r = http.post(doorman.url, headers=session_headers(sid), json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "old_cancelled_calls", "arguments": {}}})
        seen = rpc_json(r)["result"]["content"][0]["text"] if rpc_json(r)["result"]["content"] else ""
        if "first" in seen:
            break
        time.sleep(0.2)
    assert seen.split(",") == ["first"]
    # Cancelling a request that is not in flight changes nothing.
    assert http.post(doorman.url, headers=session_headers(sid), json=cancel).status_code == 202
