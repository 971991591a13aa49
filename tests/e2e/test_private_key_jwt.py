"""`private_key_jwt` (RFC 7523 §2.2) for clients identified by a Client ID Metadata Document, as
ChatGPT does: the document publishes the client's public key, the client signs an assertion for
Doorman's token endpoint, Doorman checks it (signature, iss = sub = client_id, aud, exp, single-use
jti) and nothing else authenticates that client."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from oauth import Browser, accounts_doorman, add_user, pkce, query_of
from procs import free_port

REDIRECT = "http://127.0.0.1/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class KeyedClient:
    """A metadata document with an inline JWKS, served on loopback, and the matching private key."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": "client-key-1", "alg": "ES256", "use": "sig"})
        self.port = free_port()
        self.client_id = f"http://127.0.0.1:{self.port}/oauth/client.json"
        document = {
            "client_id": self.client_id, "client_name": "Keyed agent", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [public]},
        }
        body = json.dumps(document).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def assertion(self, audience: str, **override) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now,
                  "exp": now + 120, "jti": str(uuid.uuid4()), **override}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "client-key-1"})

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def setup(py_upstream):
    d = accounts_doorman("doorman-private-key-jwt", [{"name": "py", "url": py_upstream.url}])
    add_user(d, "alice", "alice's long password")
    c = KeyedClient()
    yield d, c
    c.stop()
    d.stop()


def code_for(d, c) -> tuple[str, str]:
    verifier, challenge = pkce()
    url = f"{d.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": c.client_id, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"})
    b = Browser(d)
    try:
        back = b.authorize(url, "alice", "alice's long password")
    finally:
        b.close()
    return query_of(back)["code"][0], verifier


def exchange(d, c, code: str, verifier: str, **auth) -> httpx2.Response:
    return httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, **auth})


def test_a_signed_assertion_authenticates_the_client(setup):
    d, c = setup
    code, verifier = code_for(d, c)
    assertion = c.assertion(f"{d.base}/oauth/token")
    r = exchange(d, c, code, verifier, client_id=c.client_id, client_assertion_type=ASSERTION_TYPE,
                 client_assertion=assertion)
    assert r.status_code == 200, r.text
    tokens = r.json()
    # Refreshing needs a fresh assertion; the same one again is a replay.
    refresh = lambda a: httpx2.post(f"{d.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": a})
    replay = refresh(assertion)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client", replay.text
    ok = refresh(c.assertion(d.base))  # the issuer is an accepted audience too (RFC 7523 §3)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("auth, why", [
    ({}, "client_assertion is missing"),
    ({"client_secret": "guess"}, ""),
    ({"client_assertion_type": ASSERTION_TYPE, "assertion": "aud"}, "aud"),
    ({"client_assertion_type": ASSERTION_TYPE, "assertion": "expired"}, "expired"),
    ({"client_assertion_type": ASSERTION_TYPE, "assertion": "other-key"}, ""),
    ({"client_assertion_type": "urn:example:other", "assertion": "good"}, ""),
])
def test_anything_but_a_valid_assertion_is_refused(setup, auth, why):
    d, c = setup
    code, verifier = code_for(d, c)
    fields = {"client_id": c.client_id}
    kind = auth.get("assertion")
    if kind:
        if kind == "aud":
            token = c.assertion("https://someone-else.example/token")
        elif kind == "expired":
            token = c.assertion(f"{d.base}/oauth/token", exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)
        elif kind == "other-key":
            other = ec.generate_private_key(ec.SECP256R1())
            token = jwt.encode({"iss": c.client_id, "sub": c.client_id, "aud": f"{d.base}/oauth/token",
                                "exp": int(time.time()) + 60, "jti": str(uuid.uuid4())}, other,
                               algorithm="ES256", headers={"kid": "client-key-1"})
        else:
            token = c.assertion(f"{d.base}/oauth/token")
        fields.update(client_assertion_type=auth["client_assertion_type"], client_assertion=token)
    elif "client_secret" in auth:
        fields["client_secret"] = auth["client_secret"]
    r = exchange(d, c, code, verifier, **fields)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert why in r.json()["error_description"]
