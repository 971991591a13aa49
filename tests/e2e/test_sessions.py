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


def test_the_get_stream_relays_resource_updates_from_the_upstream(everything, http):
    """A subscription made through Doorman is honoured: the upstream's notifications/resources/updated
    reaches the client's GET stream, with the URI the client knows; the stream ends with the session."""
    import json
    import threading

    import httpx2

    d = Doorman("doorman-get-stream", [{"name": "everything", "url": everything.url}])
    try:
        sid = initialize(http, d.url)
        seen, opened = [], threading.Event()

        def listen():
            with httpx2.Client(timeout=httpx2.Timeout(30, read=30)) as c:
                with c.stream("GET", d.url, headers={**session_headers(sid), "Accept": "text/event-stream"}) as r:
                    seen.append(("status", r.status_code))
                    opened.set()
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            seen.append(json.loads(line[5:]))

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert opened.wait(10)
        time.sleep(0.5)  # let Doorman open the upstream's stream
        uri = "everything+demo://resource/static/document/architecture.md"
        r = http.post(d.url, headers=session_headers(sid), json={
            "jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": uri}})
        assert rpc_json(r)["result"] == {}
        r = http.post(d.url, headers=session_headers(sid), json={
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "everything_toggle-subscriber-updates", "arguments": {}}})
        assert "error" not in rpc_json(r)
        deadline = time.monotonic() + 15
        updates = []
        while not updates and time.monotonic() < deadline:
            updates = [m for m in seen if isinstance(m, dict) and m.get("method") == "notifications/resources/updated"]
            time.sleep(0.1)
        assert seen[0] == ("status", 200)
        assert updates, f"no resource update relayed; saw {seen}"
        assert updates[0]["params"]["uri"] == uri
        assert http.delete(d.url, headers=session_headers(sid)).status_code == 200
        t.join(10)
        assert not t.is_alive(), "the GET stream ends with its session"
    finally:
        d.stop()


def test_get_without_or_with_an_unknown_session(everything, http):
    d = Doorman("doorman-get-refusals", [{"name": "everything", "url": everything.url}])
    try:
        assert http.get(d.url, headers={"Accept": "text/event-stream"}).status_code == 405
        r = http.get(d.url, headers={"Accept": "text/event-stream", "mcp-session-id": "nope"})
        assert r.status_code == 404
    finally:
        d.stop()
