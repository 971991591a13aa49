"""An upstream that is down, slow, broken or killed mid-call gives a clear JSON-RPC error naming
it; the other upstreams keep working, and a recovered upstream is used again."""

import threading
import time

import anyio
import pytest
from mcp import Client

from conftest import ACCEPT_BOTH, Doorman, initialize, rpc_json, session_headers
from procs import free_port, start_everything, start_garbage, start_py_upstream


def call(http, url, sid, name, arguments, rid=1):
    r = http.post(url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
    return rpc_json(r)


@pytest.fixture(scope="module")
def faulty(py_upstream):
    garbage_port = free_port()
    garbage = start_garbage(garbage_port)
    down_port = free_port()  # nothing listens here
    d = Doorman("doorman-faults", [
        {"name": "py", "url": py_upstream.url, "timeout": "1s"},
        {"name": "garbage", "url": f"http://127.0.0.1:{garbage_port}/mcp"},
        {"name": "down", "url": f"http://127.0.0.1:{down_port}/mcp"},
    ])
    yield d
    d.stop()
    garbage.stop()


def test_lists_leave_out_broken_upstreams_and_say_which(faulty, http):
    sid = initialize(http, faulty.url)
    r = http.post(faulty.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 200
    result = rpc_json(r)["result"]
    assert {t["name"] for t in result["tools"]} == {"py_add", "py_slow", "py_progress", "py_log"}
    missing = {m["upstream"]: m["error"] for m in result["_meta"]["dev.doorman/unavailableUpstreams"]}
    assert set(missing) == {"garbage", "down"}
    assert "invalid response" in missing["garbage"]
    assert "unreachable" in missing["down"]


@pytest.mark.parametrize("upstream, reason, words", [
    ("garbage", "invalid_response", "upstream 'garbage' sent an invalid response"),
    ("down", "unreachable", "upstream 'down' is unreachable"),
])
def test_a_broken_upstream_is_named_in_the_error(faulty, http, upstream, reason, words):
    sid = initialize(http, faulty.url)
    msg = call(http, faulty.url, sid, f"{upstream}_anything", {})
    assert msg["error"]["code"] == -32010
    assert words in msg["error"]["message"]
    assert msg["error"]["data"] == {"upstream": upstream, "reason": reason}
    # The healthy upstream keeps working in the same session.
    assert call(http, faulty.url, sid, "py_add", {"a": 1, "b": 1}, rid=2)["result"]["content"][0]["text"] == "2"


def test_an_upstream_slower_than_its_timeout_gives_an_error_not_a_hang(faulty, http):
    sid = initialize(http, faulty.url)
    msg = call(http, faulty.url, sid, "py_slow", {"seconds": 10})
    assert msg["error"]["code"] == -32010
    assert msg["error"]["message"] == "upstream 'py' did not answer within 1s"
    assert msg["error"]["data"]["reason"] == "timeout"
    assert call(http, faulty.url, sid, "py_add", {"a": 2, "b": 2}, rid=2)["result"]["content"][0]["text"] == "4"


def test_errors_reach_real_clients_as_errors(faulty):
    async def go():
        async with Client(faulty.url, mode="auto") as c:
            ok = await c.call_tool("py_add", {"a": 3, "b": 4})
            try:
                await c.call_tool("down_anything", {})
            except Exception as e:  # the SDK raises the JSON-RPC error
                return ok.content[0].text, str(e)
            return ok.content[0].text, None

    ok, err = anyio.run(go)
    assert ok == "7"
    assert err is not None and "upstream 'down' is unreachable" in err


@pytest.mark.parametrize("kind", ["py", "everything"])
def test_an_upstream_killed_mid_call_then_restarted(kind, http):
    """The in-flight call fails naming the upstream; after a restart on the same port, the same
    conversation works again (a stateful upstream gets a new upstream session)."""
    port = free_port()
    start = (lambda: start_py_upstream(port, name="py-killed")) if kind == "py" else (lambda: start_everything(port, name="everything-killed"))
    slow = ("slow", {"seconds": 30}) if kind == "py" else ("trigger-long-running-operation", {"duration": 30, "steps": 30})
    quick = ("add", {"a": 20, "b": 22}) if kind == "py" else ("echo", {"message": "back"})
    expected = "42" if kind == "py" else "Echo: back"
    upstream = start()
    d = Doorman(f"doorman-killed-{kind}", [{"name": kind, "url": f"http://127.0.0.1:{port}/mcp", "timeout": "60s"}])
    try:
        sid = initialize(http, d.url)
        assert call(http, d.url, sid, f"{kind}_{quick[0]}", quick[1])["result"]["content"][0]["text"] == expected
        outcome = {}

        def in_flight():
            outcome["msg"] = call(http, d.url, sid, f"{kind}_{slow[0]}", slow[1], rid=2)

        t = threading.Thread(target=in_flight)
        t.start()
        time.sleep(1.0)  # let the call reach the upstream
        upstream.kill()
        t.join(30)
        assert not t.is_alive(), "the call hung after its upstream died"
        err = outcome["msg"]["error"]
        assert err["code"] == -32010 and err["data"]["upstream"] == kind
        assert f"upstream '{kind}'" in err["message"]

        # While it is down: a clear error, at once.
        down = call(http, d.url, sid, f"{kind}_{quick[0]}", quick[1], rid=3)["error"]
        assert down["data"] == {"upstream": kind, "reason": "unreachable"}

        upstream = start()
        again = call(http, d.url, sid, f"{kind}_{quick[0]}", quick[1], rid=4)
        assert again["result"]["content"][0]["text"] == expected
    finally:
        d.stop()
        upstream.stop()


def test_doorman_starts_and_serves_while_every_upstream_is_down(http):
    d = Doorman("doorman-all-down", [{"name": "gone", "url": f"http://127.0.0.1:{free_port()}/mcp"}])
    try:
        sid = initialize(http, d.url)
        r = http.post(d.url, headers=session_headers(sid), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert rpc_json(r)["result"]["tools"] == []
        assert http.get(f"{d.base}/healthz").status_code == 200
    finally:
        d.stop()
