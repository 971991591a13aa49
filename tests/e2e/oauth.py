"""Layer-1 test helpers: a headless "browser" that walks Doorman's sign-in and consent pages
with plain HTTP (real forms, real cookies), PKCE, users made with the real CLI, and the test
clock hook. Plain functions and classes; fixtures live in the test files or conftest.py.

The test clock: a Doorman started with DOORMAN_TEST_CLOCK=1 accepts
`POST /_test/clock {"advance_seconds": N}` and moves its clock forward (never exposed otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2

from conftest import DOORMAN_BIN, Doorman

ACCOUNTS = {"mode": "accounts", "development": True}
TEST_CLOCK = {"DOORMAN_TEST_CLOCK": "1"}


def accounts_doorman(name: str, upstreams: list[dict], sign_in: dict | None = None, extra_toml: str = "",
                     env: dict | None = None, server: dict | None = None, port: int | None = None) -> Doorman:
    """A Doorman in accounts mode (development allowances on, test clock hook on)."""
    return Doorman(name, upstreams, server=server, sign_in={**ACCOUNTS, **(sign_in or {})},
                   extra_toml=extra_toml, env={**TEST_CLOCK, **(env or {})}, port=port)


def add_user(d: Doorman, name: str, password: str, *, admin: bool = False, email: str | None = None) -> None:
    """`doorman users add NAME --password-stdin` against the Doorman's own config."""
    argv = [str(DOORMAN_BIN), "users", "add", name, "--password-stdin", "--config", str(d.config)]
    if admin:
        argv.append("--admin")
    if email:
        argv += ["--email", email]
    out = subprocess.run(argv, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def advance_clock(d: Doorman, seconds: float) -> None:
    r = httpx2.post(f"{d.base}/_test/clock", json={"advance_seconds": seconds}, timeout=10)
    assert r.status_code == 200, r.text


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Form:
    def __init__(self, action: str, method: str):
        self.action = action
        self.method = method
        self.fields: dict[str, str] = {}
        self.buttons: list[tuple[str, str]] = []


class FormParser(HTMLParser):
    """Collects forms, their inputs (hidden and visible) and their submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append(Form(a.get("action") or "", (a.get("method") or "get").lower()))
        elif tag == "input" and self.forms:
            if a.get("type") == "submit" and a.get("name"):
                self.forms[-1].buttons.append((a["name"], a.get("value") or ""))
            elif a.get("name"):
                self.forms[-1].fields[a["name"]] = a.get("value") or ""
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value") or ""))


def forms_of(html: str) -> list[Form]:
    p = FormParser()
    p.feed(html)
    return p.forms


class Browser:
    """One person's browser: a cookie jar that follows Doorman's pages by hand."""

    def __init__(self, d: Doorman):
        self.d = d
        self.http = httpx2.Client(timeout=30, follow_redirects=False)
        self.pages: list[httpx2.Response] = []

    def close(self):
        self.http.close()

    def get(self, url: str) -> httpx2.Response:
        r = self.http.get(url)
        self.pages.append(r)
        return r

    def submit(self, page_url: str, form: Form, values: dict[str, str]) -> httpx2.Response:
        data = {**form.fields, **values}
        r = self.http.post(urljoin(page_url, form.action or page_url), data=data)
        self.pages.append(r)
        return r

    def authorize(self, authorization_url: str, username: str | None, password: str | None,
                  decision: str = "allow", totp: str | None = None, max_steps: int = 10) -> str:
        """Follows an authorization URL through sign-in and consent; returns the Location that
        points outside Doorman (the client's redirect URI with code/state/iss or error)."""
        url = authorization_url
        r = self.get(url)
        for _ in range(max_steps):
            if r.status_code in (302, 303, 307):
                nxt = urljoin(url, r.headers["location"])
                if not nxt.startswith(self.d.base + "/"):
                    return nxt
                url = nxt
                r = self.get(url)
                continue
            assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:500]}"
            path = urlparse(url).path
            forms = forms_of(r.text)
            if path == "/sign-in":
                form = next(f for f in forms if "password" in f.fields)
                values = {"username": username or "", "password": password or ""}
                if totp is not None:
                    values["totp"] = totp
                r = self.submit(url, form, values)
            elif path == "/consent":
                form = next(f for f in forms if any(b[0] == "decision" for b in f.buttons) or "decision" in f.fields)
                r = self.submit(url, form, {"decision": decision})
            else:
                raise AssertionError(f"unexpected page {url}: {r.text[:300]}")
        raise AssertionError("too many steps")


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


# --- Added for the negative matrix and the secret scan (test_oauth_negative.py) ----------------

import json as _json
import re as _re
import sqlite3 as _sqlite3


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict, dict, str]:
    """(header, claims, signature segment) of a compact JWS, without verifying anything."""
    h, p, s = token.split(".")
    return _json.loads(b64u_decode(h)), _json.loads(b64u_decode(p)), s


def jwt_es256(header: dict, claims: dict, private_key) -> str:
    """A compact JWS signed with an ES256 key (`cryptography` EllipticCurvePrivateKey, P-256);
    the signature is R ‖ S, 32 bytes each (RFC 7518 §3.4)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = f"{b64u(_json.dumps(header).encode())}.{b64u(_json.dumps(claims).encode())}"
    r, s = decode_dss_signature(private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def jwt_unsigned(header: dict, claims: dict, signature: str = "") -> str:
    """A compact JWS with whatever header, claims and signature segment it is given."""
    return f"{b64u(_json.dumps(header).encode())}.{b64u(_json.dumps(claims).encode())}.{signature}"


def new_es256_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def doorman_signing_key(d: Doorman):
    """(kid, private key) of the key a Doorman signs access tokens with, read from its data
    directory: the `signing_keys` row whose private half is sealed by the `keyring` file
    (`{key id}.{base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)}`, AAD `signing-key:{kid}`).
    Lets a test mint tokens that are correctly signed but wrong in one claim."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    data = d.dir / "data"
    ring = {}
    for line in (data / "keyring").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key_id, key = line.split(" ", 1)
            ring[key_id] = b64u_decode(key.strip())
    db = _sqlite3.connect(f"file:{data / 'doorman.db'}?mode=ro", uri=True)
    try:
        kid, sealed = db.execute(
            "SELECT kid, private_key_sealed FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    key_id, blob = sealed.split(".", 1)
    raw = b64u_decode(blob)
    pkcs8 = AESGCM(ring[key_id]).decrypt(raw[:12], raw[12:], f"signing-key:{kid}".encode())
    return kid, load_der_private_key(pkcs8, password=None)


_CHALLENGE_PARAM = _re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')


def www_authenticate(value: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of one WWW-Authenticate challenge (RFC 9110 §11.6.1)."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for k, v in _CHALLENGE_PARAM.findall(rest):
        if v.startswith('"'):
            v = _re.sub(r"\\(.)", r"\1", v[1:-1])
        params[k.lower()] = v
    return scheme, params


def set_cookies(r: httpx2.Response) -> dict[str, dict[str, str]]:
    """Set-Cookie headers of a response: name -> {"value": ..., attribute (lowercase): value}."""
    out = {}
    for header in r.headers.get_list("set-cookie"):
        first, *attrs = [p.strip() for p in header.split(";")]
        name, _, value = first.partition("=")
        entry = {"value": value}
        for a in attrs:
            k, _, v = a.partition("=")
            entry[k.strip().lower()] = v.strip()
        out[name] = entry
    return out
