"""The peers of layer 2 (people connecting their own accounts at resources) as Python helpers:
a protected MCP server (tests/peers/resource_upstream.py) whose tokens come from its own
authorization server (tests/peers/idp.mjs started with `resource_server=`, see idp.py), and a
plain-HTTP walk of that server's code flow with PKCE that returns the tokens.

    idp = start_idp(clients=[...], accounts=[...], resource_server=resource_server(audience))
    notes = start_resource_upstream(port, idp.issuer, audience, self_auth=True)
    tokens = obtain_tokens(idp, "notes-client", secret, redirect_uri, "alice", "pw", "notes:read")

Plain functions; fixtures live in the test files.
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlencode

import httpx2

from idp import Idp, idp_walk
from oauth import pkce, query_of
from procs import PEERS, VENV_PYTHON, Proc, wait_http

RESOURCE_UPSTREAM = PEERS / "resource_upstream.py"


def start_resource_upstream(port: int, issuer: str, audience: str, stateless: bool = False, self_auth: bool = False,
                            *, name: str = "resource-upstream", scopes: str = "notes:read notes:write",
                            required_scopes: str = "", timeout: float = 20.0) -> Proc:
    """tests/peers/resource_upstream.py at http://127.0.0.1:<port>/mcp, accepting JWT access
    tokens of `issuer` for `audience` only. `self_auth`: RFC 9728 metadata and resource_metadata=
    in its 401 (then `audience` should be its own /mcp URL). Sets `proc.url` to the /mcp URL."""
    argv = [VENV_PYTHON, RESOURCE_UPSTREAM, "--port", str(port), "--issuer", issuer, "--audience", audience,
            "--scopes", scopes, "--required-scopes", required_scopes]
    if stateless:
        argv.append("--stateless")
    if self_auth:
        argv.append("--self-auth")
    proc = Proc(name, argv, env={"PYTHONUNBUFFERED": "1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout, proc)
    except BaseException:
        proc.stop()
        raise
    proc.url = f"http://127.0.0.1:{port}/mcp"
    return proc


def token_request(idp: Idp, client_id: str, secret: str, data: dict) -> httpx2.Response:
    """A request to the token endpoint with client_secret_basic."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return httpx2.post(f"{idp.issuer}/token", data=data, headers={"Authorization": f"Basic {basic}"}, timeout=30)


def refresh(idp: Idp, client_id: str, secret: str, refresh_token: str) -> httpx2.Response:
    return token_request(idp, client_id, secret, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def revoke(idp: Idp, client_id: str, secret: str, token: str, hint: str = "refresh_token") -> httpx2.Response:
    """RFC 7009 revocation with client_secret_basic."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return httpx2.post(f"{idp.issuer}/token/revocation", data={"token": token, "token_type_hint": hint},
                       headers={"Authorization": f"Basic {basic}"}, timeout=30)


def obtain_tokens(idp: Idp, client_id: str, secret: str, redirect_uri: str, username: str, password: str,
                  scope: str, *, decision: str = "allow", **extra) -> dict:
    """The code flow with PKCE through the IdP's login and consent pages with plain HTTP; returns
    the token response. `extra` goes into the authorization request (e.g. resource=, prompt=)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        back = idp_walk(http, f"{idp.issuer}/auth?{urlencode(params)}", idp, username, password, decision=decision)
    q = query_of(back)
    assert back.startswith(redirect_uri) and q.get("state") == [state], back
    assert "code" in q, f"no code: {q}"
    r = token_request(idp, client_id, secret, {"grant_type": "authorization_code", "code": q["code"][0],
                                                "redirect_uri": redirect_uri, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    return r.json()
