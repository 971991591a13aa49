"""The peers of layer 2 (people connecting their own accounts at resources) as Python helpers:
a protected MCP server (tests/peers/resource_upstream.py) whose tokens come from its own
authorization server (tests/peers/idp.mjs started with `resource_server=`, see idp.py), and a
plain-HTTP walk of that server's code flow with PKCE that returns the tokens.

    idp = start_idp(clients=[...], accounts=[...], resource_server=resource_server(audience))
    notes = start_resource_upstream(port, idp.issuer, audience, self_auth=True)
    tokens = obtain_tokens(idp, "notes-client", secret, redirect_uri, "alice", "pw", "notes:read")

What an MCP client does with a server that does MCP authorization itself (RFC 9728 -> RFC 8414 ->
RFC 7591 -> code flow with PKCE and RFC 8707 `resource`), with a public client (secret None):

    found = discover_from_challenge(notes.url)      # {"prm", "as_metadata", "www_authenticate"}
    client = register_public_client(idp, [redirect_uri])
    tokens = obtain_tokens(idp, client["client_id"], None, redirect_uri, "alice", "pw", "notes:read",
                           resource=audience, token_params={"resource": audience})

Plain functions; fixtures live in the test files.
"""

from __future__ import annotations

import base64
import re
import secrets
from urllib.parse import urlencode

import httpx2

from idp import Idp, idp_walk
from oauth import pkce, query_of
from procs import PEERS, VENV_PYTHON, Proc, wait_http

RESOURCE_UPSTREAM = PEERS / "resource_upstream.py"


def start_resource_upstream(port: int, issuer: str, audience: str, stateless: bool = False, self_auth: bool = False,
                            *, name: str = "resource-upstream", scopes: str = "notes:read notes:write",
                            required_scopes: str = "", timeout: float = 20.0, private_tool: str = "",
                            listing_token: str = "", forged_errors: bool = False) -> Proc:
    """tests/peers/resource_upstream.py at http://127.0.0.1:<port>/mcp, accepting JWT access
    tokens of `issuer` for `audience` only. `self_auth`: RFC 9728 metadata and resource_metadata=
    in its 401 (then `audience` should be its own /mcp URL). Sets `proc.url` to the /mcp URL."""
    argv = [VENV_PYTHON, RESOURCE_UPSTREAM, "--port", str(port), "--issuer", issuer, "--audience", audience,
            "--scopes", scopes, "--required-scopes", required_scopes, "--private-tool", private_tool,
            "--listing-token", listing_token]
    if stateless:
        argv.append("--stateless")
    if self_auth:
        argv.append("--self-auth")
    if forged_errors:
        argv.append("--forged-errors")
    proc = Proc(name, argv, env={"PYTHONUNBUFFERED": "1"})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout, proc)
    except BaseException:
        proc.stop()
        raise
    proc.url = f"http://127.0.0.1:{port}/mcp"
    return proc


def token_request(idp: Idp, client_id: str, secret: str | None, data: dict) -> httpx2.Response:
    """A request to the token endpoint with client_secret_basic, or as a public client
    (token_endpoint_auth_method none: client_id in the form) when `secret` is None."""
    if secret is None:
        return httpx2.post(f"{idp.issuer}/token", data={**data, "client_id": client_id}, timeout=30)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return httpx2.post(f"{idp.issuer}/token", data=data, headers={"Authorization": f"Basic {basic}"}, timeout=30)


def refresh(idp: Idp, client_id: str, secret: str | None, refresh_token: str, **extra) -> httpx2.Response:
    """The refresh grant; `extra` goes into the form (e.g. resource=)."""
    return token_request(idp, client_id, secret, {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                   **extra})


def register_public_client(idp: Idp, redirect_uris: list[str], scope: str | None = None, **metadata) -> dict:
    """RFC 7591 registration of a public client (token_endpoint_auth_method none, code +
    refresh_token grants, response type code), as Doorman registers itself; returns the answer."""
    body = {"redirect_uris": redirect_uris, "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "client_name": "Doorman", **metadata}
    if scope is not None:
        body["scope"] = scope
    return idp.register(body)


def challenge_params(www_authenticate: str) -> dict[str, str]:
    """The auth-params of a `Bearer` challenge (quoted or token values), e.g. resource_metadata."""
    assert www_authenticate.lower().startswith("bearer "), www_authenticate
    return {k.lower(): (q if q else t) for k, q, t in
            re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', www_authenticate[7:])}


def discover_from_challenge(mcp_url: str) -> dict:
    """What an MCP client does first: an unauthenticated request gets 401 with
    resource_metadata=; that RFC 9728 document names the authorization server, whose RFC 8414
    metadata comes next. Returns {"www_authenticate", "prm", "as_metadata"}."""
    r = httpx2.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10,
                    headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401, (r.status_code, r.text)
    challenge = r.headers["www-authenticate"]
    prm = httpx2.get(challenge_params(challenge)["resource_metadata"], timeout=10)
    assert prm.status_code == 200, prm.text
    [issuer] = prm.json()["authorization_servers"]
    meta = httpx2.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10)
    assert meta.status_code == 200, meta.text
    return {"www_authenticate": challenge, "prm": prm.json(), "as_metadata": meta.json()}


def revoke(idp: Idp, client_id: str, secret: str, token: str, hint: str = "refresh_token") -> httpx2.Response:
    """RFC 7009 revocation with client_secret_basic."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return httpx2.post(f"{idp.issuer}/token/revocation", data={"token": token, "token_type_hint": hint},
                       headers={"Authorization": f"Basic {basic}"}, timeout=30)


def obtain_tokens(idp: Idp, client_id: str, secret: str | None, redirect_uri: str, username: str, password: str,
                  scope: str, *, decision: str = "allow", token_params: dict | None = None, **extra) -> dict:
    """The code flow with PKCE through the IdP's login and consent pages with plain HTTP; returns
    the token response. `extra` goes into the authorization request (e.g. resource=, prompt=),
    `token_params` into the token request (e.g. {"resource": audience}). `secret` None: a
    public client."""
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
                                                "redirect_uri": redirect_uri, "code_verifier": verifier,
                                                **(token_params or {})})
    assert r.status_code == 200, r.text
    return r.json()
