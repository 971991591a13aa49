"""Upstream sessions follow downstream conversations: one per conversation for a stateful
upstream, ended with it."""

import time

from conftest import Doorman, initialize, rpc_json, session_headers


def echo(http, url, sid, text):
    r = http.post(url, headers=session_headers(sid), json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "everything_echo", "arguments": {"message": text}}})
    return rpc_json(r)["result"]["content"][0]["text"]


def test_each_conversation_has_its_own_upstream_session_ended_with_it(everything, http):
    d = Doorman("doorman-upstream-sessions", [{"name": "everything", "url": everything.url}],
                server={"log_level": "info,doorman=debug"})
    try:
        # The log file is shared by runs with the same name: count only what this run wrote.
        start = len(d.log())
        log = lambda: d.log()[start:]
        a, b = initialize(http, d.url), initialize(http, d.url)
        for sid, text in [(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")]:
            assert echo(http, d.url, sid, text) == f"Echo: {text}"
        assert log().count("opened an upstream session") == 2
        assert http.delete(d.url, headers=session_headers(a)).status_code == 200
        deadline = time.monotonic() + 10
        while "ended an upstream session" not in log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log().count("ended an upstream session") == 1
        # The other conversation is untouched and keeps its upstream session.
        assert echo(http, d.url, b, "b3") == "Echo: b3"
        assert log().count("opened an upstream session") == 2
    finally:
        d.stop()
