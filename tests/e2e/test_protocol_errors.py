"""Every malformed or out-of-place request gets the protocol's error and the HTTP status the
spec gives, and changes nothing. Raw HTTP, so each case is exactly what it says.

Each refusal asserts the exact HTTP status, the exact JSON-RPC error code (and id, JSON-RPC 2.0
§5: null when the request's id could not be read), and that Doorman's store is as it was
(`refused`, conftest.store_unchanged: every SQLite table before and after). The gateway runs in
local mode: its store holds the stateful sessions (opened by `initialize`, which happens before
the snapshot) and the audit of calls; a refusal before a call is dispatched records nothing, so
those checks do not wait for the background audit writer (`dispatched=False`).
"""

import json
import time

import pytest

from conftest import (ACCEPT_BOTH, MODERN, Doorman, initialize, modern_headers, modern_request,
                      rpc_json, session_headers, store_unchanged)

ANY_ID = object()


def error_of(r):
    body = r.json()
    return body.get("id"), body["error"]["code"], body["error"]["message"]


def refused(gateway, send, status: int, code: int, rid=ANY_ID, *, dispatched: bool = False, allow=None):
    """Sends (`send()`) inside the store check; asserts the status, the JSON-RPC error code and id.
    `dispatched`: the request reached a method (which may be audited), so wait for the writer."""
    with store_unchanged(gateway, allow, **({} if dispatched else {"settle": 0.0})):
        r = send()
    assert r.status_code == status, (r.status_code, r.text[:300])
    got_id, got_code, _ = error_of(r)
    assert got_code == code, r.text[:300]
    if rid is not ANY_ID:
        assert got_id == rid, r.text[:300]
    return r


# --- JSON-RPC shape -------------------------------------------------------------------------

def test_malformed_json_is_a_parse_error_with_a_null_id(gateway, http):
    refused(gateway, lambda: http.post(gateway.url, headers=ACCEPT_BOTH, content=b'{"jsonrpc": "2.0", "id": 1, "method": '),
            400, -32700, None)


@pytest.mark.parametrize("body", [
    {"id": 7, "method": "tools/list"},                              # no "jsonrpc"
    {"jsonrpc": "1.0", "id": 7, "method": "tools/list"},             # wrong version
    {"jsonrpc": 2.0, "id": 7, "method": "tools/list"},               # version as a number
    {"jsonrpc": "2.0", "id": 7, "method": 42},                       # method not a string
    {"jsonrpc": "2.0", "id": 7, "method": None},                     # method null
    {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1]},  # params not an object
    {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": "x"},  # params a string
    {"jsonrpc": "2.0", "id": 7},                                     # neither request nor response
    "tools/list",                                                    # not an object
    None,                                                            # null
    42,                                                              # a number
])
def test_invalid_json_rpc_is_invalid_request(gateway, http, body):
    """JSON-RPC 2.0 §5.1: -32600 Invalid Request, 400 (MCP basic/transports)."""
    sid = initialize(http, gateway.url)
    content = json.dumps(body).encode()         # `null` too (httpx sends no body for json=None)
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid), content=content), 400, -32600)


@pytest.mark.parametrize("rid", [None, {"a": 1}, 1.5, True, [1]], ids=["null", "object", "float", "bool", "array"])
def test_an_id_of_the_wrong_type_is_invalid_request(gateway, http, rid):
    """MCP basic/index "Requests": the id is a string or an integer, never null; the answer's id is
    null because the request's could not be used (JSON-RPC 2.0 §5)."""
    sid = initialize(http, gateway.url)
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid),
                                       json={"jsonrpc": "2.0", "id": rid, "method": "ping"}), 400, -32600, None)


@pytest.mark.parametrize("content", [
    b"[" * 5000 + b"]" * 5000,                                       # nesting beyond the parser's limit
    b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}',            # invalid UTF-8
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"} trailing',       # trailing garbage
    b"",                                                             # empty body
    b'\x00{"jsonrpc": "2.0", "id": 1, "method": "ping"}',            # a NUL first
], ids=["nested-too-deep", "invalid-utf8", "trailing-garbage", "empty", "leading-nul"])
def test_bodies_that_are_not_json_are_parse_errors(gateway, http, content):
    """JSON-RPC 2.0 §5.1: -32700 Parse error, id null; never a crash or a 500."""
    sid = initialize(http, gateway.url)
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid), content=content), 400, -32700, None)


def test_a_null_or_object_id_is_invalid_request(gateway, http):
    sid = initialize(http, gateway.url)
    for rid in (None, {"a": 1}):
        refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid),
                                           json={"jsonrpc": "2.0", "id": rid, "method": "ping"}), 400, -32600, None)


def test_unknown_method_on_the_stateful_revision(gateway, http):
    sid = initialize(http, gateway.url)
    r = refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid),
                                           json={"jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate"}),
                200, -32601, 3, dispatched=True)
    assert r.status_code == 200


def test_unknown_method_on_the_stateless_revision_is_404(gateway, http):
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/frobnicate"),
                                       json=modern_request("tools/frobnicate", rid=4)), 404, -32601, 4, dispatched=True)


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "resources/subscribe", "initialize"])
def test_methods_removed_in_2026_07_28_are_404(gateway, http, method):
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers(method),
                                       json=modern_request(method, {"level": "info", "uri": "x"})),
            404, -32601, 1, dispatched=True)


@pytest.mark.parametrize("batch", [
    [],
    [1, 2, 3],
    [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, "junk"],
    [[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]],
], ids=["empty", "numbers", "request-and-junk", "nested"])
def test_junk_batches_are_invalid_request(gateway, http, batch):
    """JSON-RPC 2.0 §6: an empty batch is a single Invalid Request; junk batches are refused
    outside 2025-03-26 sessions (MCP 2025-06-18 removed batching)."""
    refused(gateway, lambda: http.post(gateway.url, headers=ACCEPT_BOTH, json=batch), 400, -32600, None)


def test_batches_are_refused_except_on_2025_03_26(gateway, http):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    # No session, and a 2025-11-25 session: refused.
    refused(gateway, lambda: http.post(gateway.url, headers=ACCEPT_BOTH, json=batch), 400, -32600, None)
    sid = initialize(http, gateway.url, "2025-11-25")
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid), json=batch), 400, -32600, None)
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/list"),
                                       json=[modern_request("tools/list"), modern_request("tools/list", rid=2)]),
            400, -32600, None)
    # 2025-03-26 allowed JSON-RPC batches: every request answered, in order.
    old = initialize(http, gateway.url, "2025-03-26")
    r = http.post(gateway.url, headers=session_headers(old, "2025-03-26"), json=batch)
    assert r.status_code == 200
    replies = r.json()
    assert [m["id"] for m in replies] == [1, 2]
    assert replies[0]["result"] == {}
    assert any(t["name"] == "everything_echo" for t in replies[1]["result"]["tools"])


# --- Edge ------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413(gateway, http):
    big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (5 * 1024 * 1024)}}
    refused(gateway, lambda: http.post(gateway.url, headers=ACCEPT_BOTH, json=big), 413, -32600, None)


def test_a_foreign_origin_is_403_and_loopback_origins_pass(gateway, http):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    for origin in ("http://evil.example.com", "null", f"http://localhost.evil.example:{gateway.port}",
                   f"http://127.0.0.1.evil.example:{gateway.port}"):
        r = refused(gateway, lambda: http.post(gateway.url, headers={**ACCEPT_BOTH, "Origin": origin}, json=init),
                    403, -32000, None)
        assert "mcp-session-id" not in r.headers
    r = http.post(gateway.url, headers={**ACCEPT_BOTH, "Origin": f"http://localhost:{gateway.port}"}, json=init)
    assert r.status_code == 200


@pytest.mark.parametrize("host", ["evil.example.com", "localhost.evil.example", "127.0.0.1.nip.io", "evil.example.com:80"])
def test_a_foreign_host_is_403(gateway, http, host):
    """DNS rebinding: a page at evil.example.com resolving to 127.0.0.1 sends its own Host."""
    r = refused(gateway, lambda: http.post(gateway.url, headers={**ACCEPT_BOTH, "Host": host},
                                           json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                 "params": {"protocolVersion": "2025-11-25"}}), 403, -32000, None)
    assert "mcp-session-id" not in r.headers


@pytest.mark.parametrize("accept,content_type,status", [
    ("text/html", "application/json", 406),
    ("application/xml", "application/json", 406),
    ("application/json", "text/plain", 415),
    ("application/json", "application/x-www-form-urlencoded", 415),
    ("application/json", "multipart/form-data; boundary=x", 415),
    ("application/json", None, 415),
], ids=["accept-html", "accept-xml", "text-plain", "form", "multipart", "no-content-type"])
def test_unacceptable_accept_and_content_type(gateway, http, accept, content_type, status):
    """MCP basic/transports "Sending Messages": the client accepts JSON or SSE and sends JSON."""
    headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    r = refused(gateway, lambda: http.post(gateway.url, headers=headers, content=body.encode()), status, -32000, None)
    assert "mcp-session-id" not in r.headers


def test_sse_only_clients_get_an_event_stream(gateway, http):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers={**session_headers(sid), "Accept": "text/event-stream"},
                  json={"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert rpc_json(r) == {"jsonrpc": "2.0", "id": 9, "result": {}}


# --- Sessions --------------------------------------------------------------------------------

def test_a_request_without_a_session_is_400(gateway, http):
    r = refused(gateway, lambda: http.post(gateway.url, headers={**ACCEPT_BOTH, "mcp-protocol-version": "2025-11-25"},
                                           json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), 400, -32000, 1)
    assert "MCP-Session-Id" in error_of(r)[2]


@pytest.mark.parametrize("sid", [
    "not-a-session",
    "f" * 64,
    "x" * 4096,
    "",
    b"\xc3\xa9t\xc3\xa9",
    "../../etc/passwd",
], ids=["word", "hex-like", "overlong", "empty", "non-ascii", "path"])
def test_unknown_sessions_are_404(gateway, http, sid):
    """MCP basic/transports "Session Management" §4: a session id the server does not know is
    404; the client must initialize again."""
    headers = [*{k: v for k, v in ACCEPT_BOTH.items()}.items(), ("mcp-protocol-version", "2025-11-25"),
               ("mcp-session-id", sid)]
    refused(gateway, lambda: http.post(gateway.url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            404, -32001, None)


def test_unknown_and_ended_sessions_are_404(gateway, http):
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers("not-a-session"),
                                       json={"jsonrpc": "2.0", "id": 1, "method": "ping"}), 404, -32001, None)
    sid = initialize(http, gateway.url)
    assert http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 200
    assert http.delete(gateway.url, headers=session_headers(sid)).status_code == 200
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid),
                                       json={"jsonrpc": "2.0", "id": 2, "method": "ping"}), 404, -32001, None)
    refused(gateway, lambda: http.delete(gateway.url, headers=session_headers(sid)), 404, -32001, None)
    refused(gateway, lambda: http.delete(gateway.url, headers=ACCEPT_BOTH), 400, -32000, None)


def test_session_ids_are_unique_and_unguessable(gateway, http):
    ids = {initialize(http, gateway.url) for _ in range(5)}
    assert len(ids) == 5
    for sid in ids:
        assert len(sid) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in sid)


def test_a_session_id_sent_with_another_protocol_version_is_400(gateway, http):
    sid = initialize(http, gateway.url, "2025-11-25")
    for other in ("2025-06-18", MODERN):
        r = refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid, other),
                                               json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), 400, -32000, 1)
        assert "does not match" in error_of(r)[2]
    for unknown in ("1999-01-01", "garbage", "2025-11-25x", "x" * 1000):
        refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid, unknown),
                                           json={"jsonrpc": "2.0", "id": 1, "method": "ping"}), 400, -32022, 1)
    # The session itself is untouched by the refused requests.
    assert http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 2, "method": "ping"}).status_code == 200


def test_initialize_inside_a_session_is_refused(gateway, http):
    sid = initialize(http, gateway.url)
    refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}), 400, -32600, 5)


def test_initialize_negotiates_a_supported_version(gateway, http):
    for asked, got in [("2025-03-26", "2025-03-26"), ("2025-06-18", "2025-06-18"), ("2024-01-01", "2025-11-25")]:
        r = http.post(gateway.url, headers=ACCEPT_BOTH, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert r.status_code == 200
        assert r.json()["result"]["protocolVersion"] == got
    for params in ({}, {"protocolVersion": 2025}, {"protocolVersion": None}):
        refused(gateway, lambda: http.post(gateway.url, headers=ACCEPT_BOTH,
                                           json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}),
                400, -32602, 1)


def test_the_get_stream_is_not_offered(gateway, http):
    with store_unchanged(gateway, settle=0.0):
        r = http.get(gateway.url, headers={"Accept": "text/event-stream"})
    assert r.status_code == 405
    assert "POST" in r.headers["allow"]


def test_the_get_stream_of_an_unknown_session_is_404(gateway, http):
    refused(gateway, lambda: http.get(gateway.url, headers={"Accept": "text/event-stream", "mcp-session-id": "f" * 64}),
            404, -32001, None)


def test_idle_sessions_expire(everything, http):
    d = Doorman("doorman-idle", [{"name": "everything", "url": everything.url}], server={"session_idle_timeout": "1s"})
    try:
        sid = initialize(http, d.url)
        assert http.post(d.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 200
        time.sleep(2.5)
        r = http.post(d.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert r.status_code == 404
        assert error_of(r)[1] == -32001
    finally:
        d.stop()


# --- The stateless revision's own rules --------------------------------------------------------

def test_discover_lists_every_revision(gateway, http):
    r = http.post(gateway.url, headers=modern_headers("server/discover"), json=modern_request("server/discover"))
    assert r.status_code == 200
    result = r.json()["result"]
    assert result["supportedVersions"] == ["2025-03-26", "2025-06-18", "2025-11-25", MODERN]
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "doorman"
    assert "mcp-session-id" not in r.headers


def test_missing_meta_fields_are_invalid_params(gateway, http):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}
    r = refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/list"), json=body), 400, -32602, 1)
    assert "clientCapabilities" in error_of(r)[2]


@pytest.mark.parametrize("params", [
    {},
    {"_meta": None},
    {"_meta": "x"},
    {"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}},
    {"_meta": {"io.modelcontextprotocol/protocolVersion": 20260728, "io.modelcontextprotocol/clientCapabilities": {}}},
], ids=["no-meta", "meta-null", "meta-string", "no-protocol-version", "version-a-number"])
def test_malformed_meta_is_invalid_params(gateway, http, params):
    """MCP 2026-07-28 basic/index "Per-request protocol fields": -32602 before anything else. (A
    version that is not a string cannot match the header: it is caught as a mismatch first.)"""
    code = -32020 if params.get("_meta") and isinstance(params["_meta"], dict) and \
        "io.modelcontextprotocol/protocolVersion" in params["_meta"] else -32602
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/list"),
                                       json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}),
            400, code, 1)


@pytest.mark.parametrize("headers", [
    modern_headers("tools/list", version="2025-11-25") | {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"},
    {k: v for k, v in modern_headers("tools/list").items() if k != "mcp-method"},
    {k: v for k, v in modern_headers("tools/list").items() if k != "mcp-protocol-version"},
    modern_headers("TOOLS/LIST"),
    modern_headers("tools/list/"),
    modern_headers("prompts/list"),
    modern_headers("tools/list", version="2025-11-25"),
    modern_headers("tools/list", version="garbage"),
], ids=["method-other", "no-method", "no-version", "method-case", "method-trailing-slash", "method-of-another-list",
        "version-older", "version-garbage"])
def test_headers_that_disagree_with_the_body_are_header_mismatch(gateway, http, headers):
    """MCP 2026-07-28 streamable-http "Server Validation": Mcp-Method and MCP-Protocol-Version
    must equal the body's; -32020, 400."""
    refused(gateway, lambda: http.post(gateway.url, headers=headers, json=modern_request("tools/list")), 400, -32020, 1)


@pytest.mark.parametrize("method,field,value,header", [
    ("tools/call", "name", "everything_echo", "py_add"),
    ("tools/call", "name", "everything_echo", None),
    ("tools/call", "name", "everything_echo", "EVERYTHING_ECHO"),
    ("tools/call", "name", "everything_echo", "=?base64?!!!?="),
    ("tools/call", "name", "everything_echo", "=?base64?cHlfYWRk?="),          # base64 of another tool
    ("prompts/get", "name", "everything_simple-prompt", "everything_complex-prompt"),
    ("resources/read", "uri", "demo://resource/static/document/architecture.md", "file:///etc/passwd"),
], ids=["other-tool", "missing", "case", "bad-base64", "base64-of-another", "prompt", "resource"])
def test_mcp_name_must_match(gateway, http, method, field, value, header):
    """Mcp-Name names the body's tool, prompt or resource (2026-07-28 "Server Validation"):
    a header that routes elsewhere than the body is -32020 and reaches no upstream."""
    body = modern_request(method, {field: value, **({"arguments": {"message": "hi"}} if method == "tools/call" else {})})
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers(method, header), json=body), 400, -32020, 1)


def test_mcp_name_must_match_and_may_be_base64(gateway, http):
    body = modern_request("tools/call", {"name": "everything_echo", "arguments": {"message": "hi"}})
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/call", "py_add"), json=body), 400, -32020, 1)
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/call"), json=body), 400, -32020, 1)
    r = http.post(gateway.url, headers=modern_headers("tools/call", "=?base64?ZXZlcnl0aGluZ19lY2hv?="), json=body)
    assert r.status_code == 200
    assert rpc_json(r)["result"]["content"][0]["text"] == "Echo: hi"


@pytest.mark.parametrize("version", ["2099-01-01", "1.0", "latest", "2026-07-28-draft"])
def test_an_unsupported_version_names_the_supported_ones(gateway, http, version):
    r = refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/list", version=version),
                                           json=modern_request("tools/list", version=version)), 400, -32022, 1)
    body = r.json()
    assert MODERN in body["error"]["data"]["supported"]
    assert body["error"]["data"]["requested"] == version


def test_stateless_clients_send_no_responses(gateway, http):
    """2026-07-28: a client sends requests and notifications only."""
    refused(gateway, lambda: http.post(gateway.url, headers=modern_headers("tools/list"),
                                       json={"jsonrpc": "2.0", "id": 1, "result": {},
                                             "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}),
            400, -32600, None)


def test_stateless_notifications_are_accepted(gateway, http):
    r = http.post(gateway.url, headers=modern_headers("notifications/cancelled"),
                  json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}})
    assert r.status_code == 202


def test_stateless_results_carry_result_type_and_cache_fields(gateway, http):
    r = http.post(gateway.url, headers=modern_headers("tools/list"), json=modern_request("tools/list"))
    result = rpc_json(r)["result"]
    assert result["resultType"] == "complete"
    assert result["ttlMs"] == 0 and result["cacheScope"] == "private"
    # ... and the stateful revisions do not see those fields.
    sid = initialize(http, gateway.url)
    legacy = rpc_json(http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
    assert "resultType" not in legacy["result"] and "ttlMs" not in legacy["result"]


def test_a_tool_result_is_shaped_for_each_revision_and_otherwise_as_the_upstream_wrote_it(gateway, http):
    # The echo tool's result holds nothing Doorman rewrites: it passes through unparsed
    # (jsonrpc::Passed), and the answer must still be the shaped message, under the id as sent.
    args = {"name": "everything_echo", "arguments": {"message": "caf\u00e9 \"quoted\" \\ done"}}
    for accept in ("application/json, text/event-stream", "text/event-stream"):
        headers = {**modern_headers("tools/call", "everything_echo"), "Accept": accept}
        r = http.post(gateway.url, headers=headers, json=modern_request("tools/call", args, rid="call \"one\""))
        assert r.status_code == 200, r.text
        msg = rpc_json(r)
        assert msg["id"] == 'call "one"' and msg["jsonrpc"] == "2.0"
        result = msg["result"]
        assert result["content"] == [{"type": "text", "text": 'Echo: caf\u00e9 "quoted" \\ done'}]
        assert result["resultType"] == "complete"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "doorman"
        assert r.headers["content-type"].startswith(
            "application/json" if accept.startswith("application/json") else "text/event-stream")
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers=session_headers(sid),
                  json={"jsonrpc": "2.0", "id": 12345678901234, "method": "tools/call", "params": args})
    legacy = rpc_json(r)
    assert legacy["id"] == 12345678901234
    assert legacy["result"] == {"content": [{"type": "text", "text": 'Echo: caf\u00e9 "quoted" \\ done'}]}


# A refused prompt get or resource read is audited like any other (audit.rs: every prompt get
# and resource read), so that record is the one change these refusals may make.
AUDITED = {"audit_events": "the refused prompt get / resource read is audited"}


@pytest.mark.parametrize("method,params,message", [
    ("prompts/get", {"name": "nobody_greet"}, "Unknown prompt: nobody_greet"),
    ("resources/read", {"uri": "file:///etc/passwd"}, "Unknown resource: file:///etc/passwd"),
    ("prompts/get", {"name": "../everything_simple-prompt"}, "Unknown prompt: ../everything_simple-prompt"),
    ("resources/read", {"uri": "http://169.254.169.254/latest/meta-data/"},
     "Unknown resource: http://169.254.169.254/latest/meta-data/"),
], ids=["prompt", "resource", "prompt-traversal", "resource-metadata-address"])
def test_unknown_names_are_clear_errors(gateway, http, method, params, message):
    sid = initialize(http, gateway.url)
    r = refused(gateway, lambda: http.post(gateway.url, headers=session_headers(sid),
                                           json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
                200, -32602, 1, dispatched=True, allow=AUDITED)
    assert error_of(r)[1:] == (-32602, message)
