"""Every malformed or out-of-place request gets the protocol's error and the HTTP status the
spec gives, and changes nothing. Raw HTTP, so each case is exactly what it says."""

import time

import pytest

from conftest import (ACCEPT_BOTH, MODERN, Doorman, initialize, modern_headers, modern_request,
                      rpc_json, session_headers)


def error_of(r):
    body = r.json()
    return body.get("id"), body["error"]["code"], body["error"]["message"]


# --- JSON-RPC shape -------------------------------------------------------------------------

def test_malformed_json_is_a_parse_error_with_a_null_id(gateway, http):
    r = http.post(gateway.url, headers=ACCEPT_BOTH, content=b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert r.status_code == 400
    assert error_of(r)[:2] == (None, -32700)


@pytest.mark.parametrize("body", [
    {"id": 7, "method": "tools/list"},                              # no "jsonrpc"
    {"jsonrpc": "1.0", "id": 7, "method": "tools/list"},             # wrong version
    {"jsonrpc": "2.0", "id": 7, "method": 42},                       # method not a string
    {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1]},  # params not an object
    {"jsonrpc": "2.0", "id": 7},                                     # neither request nor response
    "tools/list",                                                    # not an object
])
def test_invalid_json_rpc_is_invalid_request(gateway, http, body):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers=session_headers(sid), json=body)
    assert r.status_code == 400
    _, code, _ = error_of(r)
    assert code == -32600


def test_a_null_or_object_id_is_invalid_request(gateway, http):
    sid = initialize(http, gateway.url)
    for rid in (None, {"a": 1}):
        r = http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": rid, "method": "ping"})
        assert r.status_code == 400
        assert error_of(r)[:2] == (None, -32600)


def test_unknown_method_on_the_stateful_revision(gateway, http):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate"})
    assert r.status_code == 200
    assert error_of(r)[:2] == (3, -32601)


def test_unknown_method_on_the_stateless_revision_is_404(gateway, http):
    r = http.post(gateway.url, headers=modern_headers("tools/frobnicate"), json=modern_request("tools/frobnicate", rid=4))
    assert r.status_code == 404
    assert error_of(r)[:2] == (4, -32601)


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "resources/subscribe", "initialize"])
def test_methods_removed_in_2026_07_28_are_404(gateway, http, method):
    r = http.post(gateway.url, headers=modern_headers(method), json=modern_request(method, {"level": "info", "uri": "x"}))
    assert r.status_code == 404
    assert error_of(r)[1] == -32601


def test_batches_are_refused_except_on_2025_03_26(gateway, http):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    # No session, and a 2025-11-25 session: refused.
    r = http.post(gateway.url, headers=ACCEPT_BOTH, json=batch)
    assert r.status_code == 400 and error_of(r)[1] == -32600
    sid = initialize(http, gateway.url, "2025-11-25")
    r = http.post(gateway.url, headers=session_headers(sid), json=batch)
    assert r.status_code == 400 and error_of(r)[1] == -32600
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
    r = http.post(gateway.url, headers=ACCEPT_BOTH, json=big)
    assert r.status_code == 413
    assert error_of(r)[1] == -32600


def test_a_foreign_origin_is_403_and_loopback_origins_pass(gateway, http):
    r = http.post(gateway.url, headers={**ACCEPT_BOTH, "Origin": "http://evil.example.com"},
                  json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    assert r.status_code == 403
    assert "mcp-session-id" not in r.headers
    r = http.post(gateway.url, headers={**ACCEPT_BOTH, "Origin": f"http://localhost:{gateway.port}"},
                  json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    assert r.status_code == 200


def test_a_foreign_host_is_403(gateway, http):
    """DNS rebinding: a page at evil.example.com resolving to 127.0.0.1 sends its own Host."""
    r = http.post(gateway.url, headers={**ACCEPT_BOTH, "Host": "evil.example.com"},
                  json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    assert r.status_code == 403
    assert "mcp-session-id" not in r.headers


def test_unacceptable_accept_and_content_type(gateway, http):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    r = http.post(gateway.url, headers={"Accept": "text/html", "Content-Type": "application/json"}, json=body)
    assert r.status_code == 406
    r = http.post(gateway.url, headers={"Accept": "application/json", "Content-Type": "text/plain"}, content=b"{}")
    assert r.status_code == 415


def test_sse_only_clients_get_an_event_stream(gateway, http):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers={**session_headers(sid), "Accept": "text/event-stream"},
                  json={"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert rpc_json(r) == {"jsonrpc": "2.0", "id": 9, "result": {}}


# --- Sessions --------------------------------------------------------------------------------

def test_a_request_without_a_session_is_400(gateway, http):
    r = http.post(gateway.url, headers={**ACCEPT_BOTH, "mcp-protocol-version": "2025-11-25"},
                  json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 400
    assert "MCP-Session-Id" in error_of(r)[2]


def test_unknown_and_ended_sessions_are_404(gateway, http):
    r = http.post(gateway.url, headers=session_headers("not-a-session"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 404
    sid = initialize(http, gateway.url)
    assert http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 200
    assert http.delete(gateway.url, headers=session_headers(sid)).status_code == 200
    r = http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert r.status_code == 404
    assert http.delete(gateway.url, headers=session_headers(sid)).status_code == 404
    assert http.delete(gateway.url, headers=ACCEPT_BOTH).status_code == 400


def test_session_ids_are_unique_and_unguessable(gateway, http):
    ids = {initialize(http, gateway.url) for _ in range(5)}
    assert len(ids) == 5
    for sid in ids:
        assert len(sid) >= 32 and all(0x21 <= ord(c) <= 0x7E for c in sid)


def test_a_session_id_sent_with_another_protocol_version_is_400(gateway, http):
    sid = initialize(http, gateway.url, "2025-11-25")
    for other in ("2025-06-18", MODERN):
        r = http.post(gateway.url, headers=session_headers(sid, other), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 400, other
        assert "does not match" in error_of(r)[2]
    r = http.post(gateway.url, headers=session_headers(sid, "1999-01-01"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 400
    assert error_of(r)[1] == -32022
    # The session itself is untouched by the refused requests.
    assert http.post(gateway.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 2, "method": "ping"}).status_code == 200


def test_initialize_inside_a_session_is_refused(gateway, http):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    assert r.status_code == 400
    assert error_of(r)[:2] == (5, -32600)


def test_initialize_negotiates_a_supported_version(gateway, http):
    for asked, got in [("2025-03-26", "2025-03-26"), ("2025-06-18", "2025-06-18"), ("2024-01-01", "2025-11-25")]:
        r = http.post(gateway.url, headers=ACCEPT_BOTH, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert r.status_code == 200
        assert r.json()["result"]["protocolVersion"] == got
    r = http.post(gateway.url, headers=ACCEPT_BOTH, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert r.status_code == 400 and error_of(r)[1] == -32602


def test_the_get_stream_is_not_offered(gateway, http):
    r = http.get(gateway.url, headers={"Accept": "text/event-stream"})
    assert r.status_code == 405
    assert "POST" in r.headers["allow"]


def test_idle_sessions_expire(everything, http):
    d = Doorman("doorman-idle", [{"name": "everything", "url": everything.url}], server={"session_idle_timeout": "1s"})
    try:
        sid = initialize(http, d.url)
        assert http.post(d.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 200
        time.sleep(2.5)
        r = http.post(d.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert r.status_code == 404
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
    r = http.post(gateway.url, headers=modern_headers("tools/list"), json=body)
    assert r.status_code == 400
    assert error_of(r)[1] == -32602
    assert "clientCapabilities" in error_of(r)[2]


@pytest.mark.parametrize("headers", [
    modern_headers("tools/list", version="2025-11-25") | {"mcp-protocol-version": MODERN, "mcp-method": "tools/call"},
    {k: v for k, v in modern_headers("tools/list").items() if k != "mcp-method"},
    {k: v for k, v in modern_headers("tools/list").items() if k != "mcp-protocol-version"},
])
def test_headers_that_disagree_with_the_body_are_header_mismatch(gateway, http, headers):
    r = http.post(gateway.url, headers=headers, json=modern_request("tools/list"))
    assert r.status_code == 400
    assert error_of(r)[1] == -32020


def test_mcp_name_must_match_and_may_be_base64(gateway, http):
    body = modern_request("tools/call", {"name": "everything_echo", "arguments": {"message": "hi"}})
    r = http.post(gateway.url, headers=modern_headers("tools/call", "py_add"), json=body)
    assert r.status_code == 400 and error_of(r)[1] == -32020
    r = http.post(gateway.url, headers=modern_headers("tools/call"), json=body)
    assert r.status_code == 400 and error_of(r)[1] == -32020
    r = http.post(gateway.url, headers=modern_headers("tools/call", "=?base64?ZXZlcnl0aGluZ19lY2hv?="), json=body)
    assert r.status_code == 200
    assert rpc_json(r)["result"]["content"][0]["text"] == "Echo: hi"


def test_an_unsupported_version_names_the_supported_ones(gateway, http):
    r = http.post(gateway.url, headers=modern_headers("tools/list", version="2099-01-01"),
                  json=modern_request("tools/list", version="2099-01-01"))
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["code"] == -32022
    assert MODERN in body["error"]["data"]["supported"]
    assert body["error"]["data"]["requested"] == "2099-01-01"


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


def test_unknown_names_are_clear_errors(gateway, http):
    sid = initialize(http, gateway.url)
    r = http.post(gateway.url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "nobody_greet"}})
    assert error_of(r)[1:] == (-32602, "Unknown prompt: nobody_greet")
    r = http.post(gateway.url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "file:///etc/passwd"}})
    assert error_of(r)[1:] == (-32602, "Unknown resource: file:///etc/passwd")
