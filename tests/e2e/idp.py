"""The corporate OpenID Connect provider of the tests (tests/peers/idp.mjs, `oidc-provider` from
npm) as a Python object: start it on a free loopback port with static clients and accounts, act
as its administrator (disable a person, rotate keys, doctor the next ID token, fail a path), and
walk its login and consent pages with a plain HTTP client.

    idp = start_idp(clients=[idp_client("doorman", "s3cret", [f"{d.base}/sign-in/callback"])],
                    accounts=[account("alice", "pw", groups=["engineering"])])
    try: ...
    finally: idp.stop()

As a resource's authorization server (GitHub/Linear stand-in; JWT access tokens for one audience):

    idp = start_idp(clients=[...], accounts=[...],
                    resource_server=resource_server("http://127.0.0.1:9500/mcp", access_token_ttl=60))
    idp.count("/token", grant_type="refresh_token"); idp.revocations()

With `resource_server(..., registration=True)` it also takes RFC 7591 dynamic client registration
(open, at /reg, `registration_endpoint` in both discovery documents), as an MCP server's own
authorization server does:

    idp.register({"redirect_uris": [...], "token_endpoint_auth_method": "none"})  # the answer
    idp.registrations(); idp.count("/reg"); idp.registered_clients()

Identity Assertion JWT Authorization Grants (ID-JAG; draft-ietf-oauth-identity-assertion-authz-
grant, MCP's Enterprise-Managed Authorization) in both roles. The corporate IdP issues them by
RFC 8693 token exchange for the audiences of `id_jag(...)`; a resource's authorization server
(`resource_server(..., id_jag_issuers=[trusted_issuer(corp)])`) accepts them with the RFC 7523
jwt-bearer grant and issues its usual JWT access token. Each one's issuer must be known to the
other, so pick the resource AS's port first:

    as_port = free_port()
    corp = start_idp(clients=[idp_client("agent", SECRET, [...])], accounts=[...],
                     id_jag=id_jag([id_jag_audience(f"http://127.0.0.1:{as_port}", {"agent": "agent-there"},
                                                    resources=[RESOURCE], scopes=["notes:read"])]))
    notes = start_idp(clients=[idp_client("agent-there", SECRET, [...])], accounts=[], port=as_port,
                      resource_server=resource_server(RESOURCE, id_jag_issuers=[trusted_issuer(corp)]))
    jag = corp.exchange_for_id_jag("agent", SECRET, id_token, notes.issuer, resource=RESOURCE)
    r = notes.jwt_bearer("agent-there", SECRET, jag)          # 200: the access token
    corp.set_id_jag_policy(deny_subjects=["bob"]); corp.next_id_jag(expired=True)
    corp.id_jag_requests(); notes.id_jag_requests()           # what each decided, and why

On-behalf-of token exchange for internal APIs (RFC 8693 delegation): with `exchange(...)` the IdP
also turns the person's ID token into a plain RFC 9068 access token for one internal API (aud the
API, sub the person, act {"sub": the requesting client}), for the clients each API allows:

    idp = start_idp(clients=[...], accounts=[...],
                    exchange=exchange([exchange_audience("http://127.0.0.1:9700/mcp", ["wiki:read"],
                                                         clients=["doorman"], ttl=300)]))
    answer = idp.exchange_for_access_token("doorman", SECRET, id_token, "http://127.0.0.1:9700/mcp")
    idp.token_exchange(..., requested_token_type=ACCESS_TOKEN)  # any status, for refusals
    idp.exchange_requests()                                      # what it decided, and why

The ID-JAG policy (`set_id_jag_policy`) applies to these exchanges too.

Plain functions and classes; fixtures live in the test files or conftest.py.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from urllib.parse import quote, urljoin, urlparse

import httpx2

from procs import NODE, PEERS, Proc, free_port, wait_http

IDP_SCRIPT = PEERS / "idp.mjs"

# The ID-JAG vocabulary (RFC 8693 §3, RFC 7523 §2.1, the draft's §9).
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
REFRESH_TOKEN = "urn:ietf:params:oauth:token-type:refresh_token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
ID_JAG_TYP = "oauth-id-jag+jwt"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"


def account(username: str, password: str, *, sub: str | None = None, email: str | None = None,
            email_verified: bool = True, name: str | None = None, groups: list[str] | None = None,
            disabled: bool = False, **claims) -> dict:
    """An account record for the IdP: `username`/`password` for its login form, claims for tokens."""
    out = {
        "username": username, "password": password, "sub": sub or f"sub-{username}",
        "email": email or f"{username}@example.com", "email_verified": email_verified,
        "name": name or username.capitalize(), "groups": list(groups or []), "disabled": disabled,
    }
    out.update(claims)
    return out


def idp_client(client_id: str, secret: str | None, redirect_uris: list[str], *,
               auth_method: str = "client_secret_basic", skip_consent: bool = False, **metadata) -> dict:
    """A static client of the IdP (oidc-provider client metadata). `secret=None` with
    `auth_method="none"` is a public client. `skip_consent` makes it a first-party app."""
    out = {"client_id": client_id, "redirect_uris": redirect_uris, "token_endpoint_auth_method": auth_method,
           "skip_consent": skip_consent, **metadata}
    if secret is not None:
        out["client_secret"] = secret
    return out


def resource_server(audience: str, scopes: list[str] | None = None, *, access_token_ttl: int = 3600,
                    always_refresh: bool = False, registration: bool = False,
                    registration_skip_consent: bool = False, id_jag_issuers: list[dict] | None = None,
                    id_jag_refresh_token: bool = False) -> dict:
    """The `resource_server` config of idp.mjs: JWT access tokens (RFC 9068) for `audience`, with
    the resource's `scopes` (default notes:read, notes:write). `always_refresh`: a refresh token
    even without offline_access, as GitHub and Linear do. `registration`: open RFC 7591 dynamic
    client registration at /reg; `registration_skip_consent`: its clients get no consent page.
    `id_jag_issuers` (see `trusted_issuer()`): accept ID-JAGs of these IdPs with the jwt-bearer
    grant (every static client may use it); `id_jag_refresh_token`: with a refresh token too."""
    out = {"audience": audience, "scopes": list(scopes or ["notes:read", "notes:write"]),
           "access_token_ttl": access_token_ttl, "always_refresh": always_refresh}
    if registration or registration_skip_consent:
        out["registration"] = {"skip_consent": registration_skip_consent}
    if id_jag_issuers is not None:
        out["id_jag"] = {"trusted_issuers": list(id_jag_issuers), "refresh_token": id_jag_refresh_token}
    return out


def trusted_issuer(issuer: "str | Idp", *, jwks_uri: str | None = None, subject: str = "sub") -> dict:
    """One IdP whose ID-JAGs a resource AS accepts: its issuer (or a running `Idp`), its JWKS
    (default: found through its discovery document), and how its people map to accounts here:
    "sub" (the ID-JAG's sub; unknown ones are created just in time) or "email" (the local account
    with the ID-JAG's email claim)."""
    out = {"issuer": issuer.issuer if isinstance(issuer, Idp) else issuer, "subject": subject}
    if jwks_uri is not None:
        out["jwks_uri"] = jwks_uri
    return out


def id_jag_audience(audience: str, clients: dict[str, str], *, resources: list[str] | None = None,
                    scopes: list[str] | None = None, aliases: list[str] | None = None) -> dict:
    """One resource authorization server the IdP brokers access to: its issuer (`audience`, the
    ID-JAG's aud), `clients` mapping a requesting client_id at the IdP to that client's client_id at
    the resource AS (the ID-JAG's client_id), the `resources` paired with it (RFC 8707; a token
    exchange naming another is invalid_target), the most `scopes` the IdP grants there (default
    notes:read, notes:write), and `aliases` (other `audience` values meaning it)."""
    return {"audience": audience, "clients": dict(clients), "resources": list(resources or []),
            "scopes": list(scopes if scopes is not None else ["notes:read", "notes:write"]),
            "aliases": list(aliases or [])}


def id_jag(audiences: list[dict], *, ttl: int = 300, include_email: bool = True,
           refresh_token_subject: bool = True, include_groups: bool = False) -> dict:
    """The `id_jag` config of idp.mjs: issue ID-JAGs by token exchange for these audiences (see
    `id_jag_audience()`), living `ttl` seconds, with the person's email claim (`include_email`)
    and groups claim (`include_groups`); `refresh_token_subject`: an IdP refresh token may be the
    subject_token, besides an ID token. Every static client of the IdP may use the token-exchange
    grant."""
    return {"audiences": list(audiences), "ttl": ttl, "include_email": include_email,
            "refresh_token_subject": refresh_token_subject, "include_groups": include_groups}


def exchange_audience(audience: str, scopes: list[str], clients: list[str], *, ttl: int = 300) -> dict:
    """One internal API the IdP issues on-behalf-of access tokens for: its identifier (`audience`,
    the token's aud), the most `scopes` it grants there, the requesting `clients` (client_ids at
    the IdP) that may get tokens for it (any other is unauthorized_client), and their lifetime."""
    return {"audience": audience, "scopes": list(scopes), "clients": list(clients), "ttl": ttl}


def exchange(audiences: list[dict]) -> dict:
    """The `exchange` config of idp.mjs: issue access tokens by RFC 8693 token exchange (an ID
    token of the person as subject_token) for these APIs (see `exchange_audience()`). Every static
    client of the IdP may use the token-exchange grant; each API names the ones it serves."""
    return {"audiences": list(audiences)}


def client_auth(client_id: str, secret: str | None, data: dict, auth: str = "basic") -> tuple[dict, dict]:
    """(form, headers) of a token request with this client's authentication: "basic" (RFC 6749
    §2.3.1, form-encoded id and secret), "post" (in the form), or "none" (client_id only)."""
    if auth == "basic":
        pair = f"{quote(client_id, safe='')}:{quote(secret or '', safe='')}"
        return dict(data), {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if auth == "post":
        return {**data, "client_id": client_id, "client_secret": secret or ""}, {}
    return {**data, "client_id": client_id}, {}


class Idp:
    """One running tests/peers/idp.mjs. `issuer` is http://127.0.0.1:<port> (no trailing slash)."""

    def __init__(self, proc: Proc, port: int, config_path: Path):
        self.proc = proc
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.config_path = config_path
        self._http = httpx2.Client(timeout=30)

    # -- lifecycle
    def stop(self) -> None:
        self._http.close()
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log_text()

    # -- what a relying party reads
    def discovery(self) -> dict:
        r = self._http.get(f"{self.issuer}/.well-known/openid-configuration")
        r.raise_for_status()
        return r.json()

    def jwks(self) -> dict:
        r = self._http.get(f"{self.issuer}/jwks")
        r.raise_for_status()
        return r.json()

    def register(self, metadata: dict) -> dict:
        """An RFC 7591 registration at /reg (needs `registration`); asserts 201 and returns the
        answer: client_id, client_secret (not for token_endpoint_auth_method "none"),
        registration_access_token, registration_client_uri and the client's metadata."""
        r = self._http.post(f"{self.issuer}/reg", json=metadata)
        assert r.status_code == 201, f"registration: {r.status_code} {r.text}"
        return r.json()

    # -- the administrator's side (/_control/ on the same loopback port)
    def _control(self, method: str, path: str, body: dict | None = None):
        r = self._http.request(method, f"{self.issuer}/_control/{path}", json=body if method == "POST" else None)
        assert r.status_code == 200, f"{method} /_control/{path}: {r.status_code} {r.text}"
        return r.json()

    def accounts(self) -> list[dict]:
        return self._control("GET", "accounts")

    def put_account(self, acct: dict) -> dict:
        """Creates or replaces an account (e.g. new groups: they show in the next tokens)."""
        return self._control("POST", "accounts", acct)

    def disable(self, username: str) -> dict:
        """Disables the account: its grants, tokens and sessions are revoked (refresh and
        userinfo fail), and it cannot log in. Returns the account with `revoked_grants`."""
        return self._control("POST", f"accounts/{username}/disable", {})

    def enable(self, username: str) -> dict:
        return self._control("POST", f"accounts/{username}/enable", {})

    def rotate_keys(self, keep_previous: bool = True) -> dict:
        """New signing keys (new kids) from now on; returns {"kids": [...], "jwks": {...}}."""
        return self._control("POST", "rotate-keys", {"keep_previous": keep_previous})

    def next_id_token(self, claims: dict | None = None, remove: list[str] | None = None,
                      header: dict | None = None, key: str = "current", tamper_signature: bool = False,
                      expired: bool = False) -> dict:
        """Doctors the next ID token the token endpoint returns (see idp.mjs; `expired`: iat 10 min
        and exp 5 min ago). Returns {"queued": n, "unpublished_kid": kid of the key that is never
        published}."""
        return self._control("POST", "next-id-token", {"claims": claims or {}, "remove": remove or [],
                                                       "header": header or {}, "key": key,
                                                       "tamper_signature": tamper_signature, "expired": expired})

    def fail(self, path: str, status: int = 503, times: int = 1, *, grant_type: str | None = None,
             error: str | None = None, error_description: str | None = None) -> None:
        """The next `times` requests to `path` (e.g. "/token", "/jwks") answer `status` with
        {"error": error}; with `grant_type`, only token requests of that grant fail. `error`
        defaults to temporarily_unavailable for 5xx, invalid_grant otherwise."""
        body = {"path": path, "status": status, "times": times, "grant_type": grant_type}
        if error is not None:
            body["error"] = error
        if error_description is not None:
            body["error_description"] = error_description
        self._control("POST", "fail", body)

    def requests(self, path: str | None = None) -> list[dict]:
        """What clients sent to /auth, /token, /token/revocation, /me, /jwks, discovery (either
        well-known path), /reg (secrets masked; injected failures carry "injected": true), oldest
        first; only `path`'s if given."""
        seen = self._control("GET", "requests")
        return [r for r in seen if path is None or r["path"] == path]

    def count(self, path: str, grant_type: str | None = None) -> int:
        """How many requests reached `path` (of that `grant_type`, for /token), failures included.
        `count("/reg")` counts registration requests (RFC 7592 reads are at /reg/<client_id>)."""
        return sum(1 for r in self.requests(path)
                   if grant_type is None or r["params"].get("grant_type") == grant_type)

    def registrations(self) -> list[dict]:
        """Every POST /reg, oldest first: {method, path, route "registration", status, params (the
        client metadata as sent, secrets masked), client_id (issued, or None), error (if refused)}."""
        return [r for r in self.requests("/reg") if r["method"] == "POST"]

    def registered_clients(self) -> list[dict]:
        """The dynamically registered clients as stored (no secrets; `has_secret` tells), oldest first."""
        return self._control("GET", "clients")

    # -- ID-JAGs (see the module docstring)
    def token_exchange(self, client_id: str, secret: str | None, subject_token: str, audience: str | list[str] | None,
                       *, resource: str | list[str] | None = None, scope: str | None = None,
                       subject_token_type: str = ID_TOKEN, requested_token_type: str | None = ID_JAG,
                       auth: str = "basic", extra: dict | None = None) -> httpx2.Response:
        """An RFC 8693 token exchange at /token asking for an ID-JAG (draft §4.3), or with
        `requested_token_type=ACCESS_TOKEN` an on-behalf-of access token (config `exchange`), as
        `client_id` authenticating with `auth` ("basic", "post", "none"). A list repeats the
        parameter; None leaves it out. Returns the response, whatever its status."""
        data = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token, "subject_token_type": subject_token_type}
        if requested_token_type is not None:
            data["requested_token_type"] = requested_token_type
        if scope is not None:
            data["scope"] = scope
        data.update(extra or {})
        for name, value in (("audience", audience), ("resource", resource)):
            if value is not None:
                data[name] = value  # a list: the parameter once per value
        form, headers = client_auth(client_id, secret, data, auth)
        return self._http.post(f"{self.issuer}/token", data=form, headers=headers)

    def exchange_for_id_jag(self, client_id: str, secret: str | None, subject_token: str, audience: str,
                            **kwargs) -> str:
        """`token_exchange()` that must succeed (200, issued_token_type id-jag, token_type N_A);
        returns the ID-JAG."""
        r = self.token_exchange(client_id, secret, subject_token, audience, **kwargs)
        assert r.status_code == 200, f"token exchange: {r.status_code} {r.text}"
        body = r.json()
        assert body["issued_token_type"] == ID_JAG and body["token_type"] == "N_A", body
        return body["access_token"]

    def exchange_for_access_token(self, client_id: str, secret: str | None, subject_token: str, audience: str,
                                  scope: str | None = None, auth: str = "basic") -> dict:
        """An on-behalf-of token exchange (config `exchange`) of the person's ID token for an access
        token to `audience`, that must succeed (200, issued_token_type access_token, token_type
        Bearer); returns the answer: access_token (the JWT), issued_token_type, token_type,
        expires_in, scope (if any granted)."""
        r = self.token_exchange(client_id, secret, subject_token, audience, scope=scope,
                                requested_token_type=ACCESS_TOKEN, auth=auth)
        assert r.status_code == 200, f"token exchange: {r.status_code} {r.text}"
        body = r.json()
        assert body["issued_token_type"] == ACCESS_TOKEN and body["token_type"] == "Bearer", body
        return body

    def jwt_bearer(self, client_id: str, secret: str | None, assertion: str, *, scope: str | None = None,
                   resource: str | None = None, auth: str = "basic") -> httpx2.Response:
        """The RFC 7523 jwt-bearer grant at /token presenting `assertion` (an ID-JAG; draft §4.4),
        as `client_id` authenticating with `auth`. Returns the response, whatever its status."""
        data = {"grant_type": JWT_BEARER, "assertion": assertion}
        if scope is not None:
            data["scope"] = scope
        if resource is not None:
            data["resource"] = resource
        form, headers = client_auth(client_id, secret, data, auth)
        return self._http.post(f"{self.issuer}/token", data=form, headers=headers)

    def next_id_jag(self, claims: dict | None = None, remove: list[str] | None = None, header: dict | None = None,
                    key: str = "current", tamper_signature: bool = False, expired: bool = False) -> dict:
        """Doctors the next ID-JAG the token exchange issues: `claims` merged, `remove`d ones dropped,
        `header` fields merged (None drops one; {"alg": "none"} an unsigned token), key "unpublished"
        (a kid never in the JWKS), a flipped signature, or `expired` (exp 5 min ago). Returns
        {"queued": n, "unpublished_kid": kid}."""
        return self._control("POST", "next-id-jag", {"claims": claims or {}, "remove": remove or [],
                                                     "header": header or {}, "key": key,
                                                     "tamper_signature": tamper_signature, "expired": expired})

    def set_id_jag_policy(self, *, deny_subjects: list[str] | None = None, deny_audiences: list[str] | None = None,
                          deny_clients: list[str] | None = None, require_groups: list[str] | None = None,
                          scopes: dict[str, list[str]] | None = None, error: str | None = None,
                          error_description: str | None = None) -> dict:
        """Replaces the IdP admin's token-exchange policy, for ID-JAGs and on-behalf-of access
        tokens alike (no arguments: none): refuse these people
        (username or sub), audiences or requesting clients, require one of `require_groups`, cap
        a person's scopes ({"alice": ["notes:read"]}); a refusal answers `error` (default
        access_denied). Returns the policy."""
        policy = {"deny_subjects": deny_subjects, "deny_audiences": deny_audiences, "deny_clients": deny_clients,
                  "require_groups": require_groups, "scopes": scopes, "error": error,
                  "error_description": error_description}
        return self._control("POST", "id-jag/policy", {k: v for k, v in policy.items() if v is not None})

    def id_jag_policy(self) -> dict:
        return self._control("GET", "id-jag/policy")

    def id_jag_requests(self) -> list[dict]:
        """The token requests an ID-JAG grant handled, oldest first, each with its "id_jag":
        at the IdP {issued, subject_token_type, header, claims} or {issued: False, error,
        error_description}; at a resource AS {accepted, iss, sub, jti, client_id, account, scope,
        refresh_token} or {accepted: False, ..., error, error_description}."""
        return [r for r in self.requests("/token") if "id_jag" in r]

    def exchange_requests(self) -> list[dict]:
        """The token requests the on-behalf-of exchange (config `exchange`) handled, oldest first,
        each with its "exchange": {issued, subject_token_type, audience, header, claims} or
        {issued: False, subject_token_type, audience, error, error_description}."""
        return [r for r in self.requests("/token") if "exchange" in r]

    def revocations(self) -> list[dict]:
        """Every revocation request: {client_id, token_type_hint, status, token_sha256_prefix}."""
        return self._control("GET", "revocations")["revocations"]

    def reset_requests(self) -> None:
        self._control("POST", "reset-requests", {})


def start_idp(clients: list[dict], accounts: list[dict], *, name: str = "idp", port: int | None = None,
              ttl: dict | None = None, resource_server: dict | None = None, timeout: float = 20.0,
              conform_id_token_claims: bool = False, id_jag: dict | None = None,
              exchange: dict | None = None) -> Idp:
    """Starts tests/peers/idp.mjs on 127.0.0.1 (a free port unless given); its output goes to
    tests/artifacts/<name>.log. `resource_server` (see `resource_server()`) makes it also the
    authorization server of that resource; `id_jag` (see `id_jag()`) an issuer of ID-JAGs;
    `exchange` (see `exchange()`) an issuer of on-behalf-of access tokens for internal APIs."""
    port = port or free_port()
    cfg_dir = Path(tempfile.mkdtemp(prefix=f"doorman-{name}-"))
    cfg = cfg_dir / "idp.json"
    config = {"clients": clients, "accounts": accounts}
    if ttl:
        config["ttl"] = ttl
    if resource_server:
        config["resource_server"] = resource_server
    if id_jag:
        config["id_jag"] = id_jag
    if exchange:
        config["exchange"] = exchange
    if conform_id_token_claims:
        # oidc-provider's default: scope claims (email, profile, groups) only from UserInfo.
        config["conform_id_token_claims"] = True
    cfg.write_text(json.dumps(config))
    proc = Proc(name, [NODE, IDP_SCRIPT, "--port", str(port), "--config", cfg])
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout, proc)
    except BaseException:
        proc.stop()
        raise
    return Idp(proc, port, cfg)


# --- walking the IdP's pages with plain HTTP ---------------------------------------------------


def idp_walk(http: httpx2.Client, url: str, idp: Idp, username: str, password: str, decision: str = "allow",
             max_steps: int = 12) -> str:
    """Follows `url` (the IdP's /auth, or any redirect into the IdP) through its login and consent
    pages with `http` (a cookie-keeping client with follow_redirects=False) and returns the first
    Location that leaves the IdP (the relying party's redirect URI with code/state/iss or error).
    Raises AssertionError on anything unexpected, e.g. a refused login."""
    from oauth import forms_of  # the same small form parser as Doorman's page walker

    r = http.get(url)
    for _ in range(max_steps):
        if r.status_code in (302, 303, 307):
            nxt = urljoin(url, r.headers["location"])
            if not nxt.startswith(idp.issuer + "/"):
                return nxt
            url = nxt
            r = http.get(url)
            continue
        assert r.status_code == 200, f"IdP page {url}: {r.status_code} {r.text[:400]}"
        assert urlparse(url).path.startswith("/interaction/"), f"unexpected IdP page {url}: {r.text[:300]}"
        form = forms_of(r.text)[0]
        action = urljoin(url, form.action)
        if "password" in r.text and action.endswith("/login"):
            r = http.post(action, data={**form.fields, "username": username, "password": password})
        elif action.endswith("/consent"):
            r = http.post(action, data={**form.fields, "decision": decision})
        else:
            raise AssertionError(f"unexpected IdP form at {url}: {r.text[:300]}")
        url = action
    raise AssertionError("too many steps at the IdP")
