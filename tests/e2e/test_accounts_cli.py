"""`doorman users …` as an operator uses it: local accounts created, listed, disabled, enabled,
their passwords reset and TOTP turned on (a new seed, confirmed by a code from it) and off, through the binary, on a fresh data directory
(SQLite) and on a fresh PostgreSQL database."""

import base64
import glob
import hashlib
import hmac
import json
import os
import secrets
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from conftest import DOORMAN_BIN

PASSWORD = "correct horse battery staple"


class Cli:
    """Runs `doorman users --config FILE …` against one config (and so one store)."""

    def __init__(self, config: Path, env: dict | None = None):
        self.config = config
        self.env = {**os.environ, **(env or {})}

    def __call__(self, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(DOORMAN_BIN), "users", "--config", str(self.config), *map(str, args)],
                              input=stdin if stdin is not None else "", capture_output=True, text=True,
                              timeout=60, env=self.env)

    def ok(self, *args, stdin: str | None = None) -> str:
        out = self(*args, stdin=stdin)
        assert out.returncode == 0, f"doorman users {' '.join(map(str, args))}: {out.stderr}"
        return out.stdout

    def fails(self, *args, stdin: str | None = None) -> str:
        """The one-line reason of a refused command."""
        out = self(*args, stdin=stdin)
        assert out.returncode != 0, f"doorman users {' '.join(map(str, args))} succeeded: {out.stdout}"
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, f"one line, got: {out.stderr!r}"
        return lines[0]

    def listed(self) -> dict:
        people = json.loads(self.ok("list", "--json"))
        assert isinstance(people, list)
        return {p["username"]: p for p in people}


def write_config(tmp_path: Path, database_url: str | None = None) -> Path:
    text = f'[server]\ndata_dir = {json.dumps(str(tmp_path / "data"))}\n'
    if database_url:
        text += f"database_url = {json.dumps(database_url)}\n"
    text += '[sign_in]\nmode = "accounts"\n'
    config = tmp_path / "doorman.toml"
    config.write_text(text)
    return config


@pytest.fixture
def cli(tmp_path):
    return Cli(write_config(tmp_path))


def totp_seed(uri: str) -> bytes:
    """Checks an otpauth:// URI the way an authenticator app reads it; returns the seed."""
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp", uri
    query = parse_qs(parts.query)
    assert query["issuer"] == ["Doorman"], uri
    assert query.get("digits", ["6"]) == ["6"] and query.get("period", ["30"]) == ["30"], uri
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"], uri
    secret = query["secret"][0]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert len(seed) >= 16, "at least 128 bits (RFC 4226)"
    return seed


def test_add_list_and_refusals(cli, tmp_path):
    out = cli.ok("add", "Alice", "--password-stdin", "--email", "alice@example.com", "--admin", stdin=PASSWORD + "\n")
    assert out.startswith("created user alice (id "), out
    alice_id = out.strip().removeprefix("created user alice (id ").removesuffix(")")
    assert alice_id

    # The password comes from standard input only, without a newline at the end (CRLF too).
    assert cli.ok("add", "bob", "--password-stdin", stdin=PASSWORD + "\r\n").startswith("created user bob ")

    people = cli.listed()
    assert set(people) == {"alice", "bob"}
    alice = people["alice"]
    assert alice["id"] == alice_id
    assert alice["email"] == "alice@example.com"
    assert alice["admin"] is True and alice["disabled"] is False
    assert alice["issuer"] == "local"
    assert people["bob"]["admin"] is False and people["bob"]["email"] is None
    assert all(p["created_at"] for p in people.values())
    # No secret of any kind is listed.
    text = cli.ok("list", "--json")
    assert PASSWORD not in text and "argon2" not in text

    table = cli.ok("list").splitlines()
    assert table[0].split() == ["USERNAME", "EMAIL", "ADMIN", "DISABLED", "CREATED"]
    assert [row.split()[0] for row in table[1:]] == ["alice", "bob"]
    assert table[1].split()[1:4] == ["alice@example.com", "yes", "no"]

    # Refusals: one line each, saying why, and nothing created.
    assert "already exists" in cli.fails("add", "ALICE", "--password-stdin", stdin=PASSWORD + "\n")
    assert "--password-stdin" in cli.fails("add", "carol", stdin=PASSWORD + "\n")
    assert "too short" in cli.fails("add", "carol", "--password-stdin", stdin="short\n")
    assert "no password" in cli.fails("add", "carol", "--password-stdin", stdin="")
    assert "invalid username" in cli.fails("add", "carol smith", "--password-stdin", stdin=PASSWORD + "\n")
    assert "invalid email" in cli.fails("add", "carol", "--password-stdin", "--email", "nope", stdin=PASSWORD + "\n")
    assert set(cli.listed()) == {"alice", "bob"}

    # The store and the key ring live in the data directory; the key ring is private.
    data = tmp_path / "data"
    assert (data / "doorman.db").exists()
    assert (data / "keyring").stat().st_mode & 0o077 == 0


def test_disable_enable_and_reset_password(cli):
    cli.ok("add", "alice", "--password-stdin", stdin=PASSWORD + "\n")

    assert "alice" in cli.ok("disable", "alice")
    alice = cli.listed()["alice"]
    assert alice["disabled"] is True and alice["disabled_at"]
    assert cli.ok("list").splitlines()[1].split()[3] != "no"

    assert "alice" in cli.ok("enable", "Alice")
    alice = cli.listed()["alice"]
    assert alice["disabled"] is False and alice["disabled_at"] is None

    assert "alice" in cli.ok("reset-password", "alice", "--password-stdin", stdin="a brand new password\n")
    assert "too short" in cli.fails("reset-password", "alice", "--password-stdin", stdin="short\n")
    assert "--password-stdin" in cli.fails("reset-password", "alice", stdin="a brand new password\n")

    for command in (["disable", "nobody"], ["enable", "nobody"],
                    ["reset-password", "nobody", "--password-stdin"], ["totp", "nobody", "enable"]):
        assert "no such user" in cli.fails(*command, stdin=PASSWORD + "\n"), command


def totp_code(seed: bytes, at: float | None = None) -> str:
    """The code an authenticator app shows (RFC 6238 with its defaults; RFC 4226 §5.3)."""
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(seed, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def test_totp_enable_confirm_and_disable(cli):
    cli.ok("add", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    out = cli("totp", "alice@example.com", "enable")
    assert out.returncode == 0, out.stderr
    uri = out.stdout.strip()
    assert uri.startswith("otpauth://totp/"), uri
    # The next step is said where the operator reads it, and the URI alone is on stdout.
    assert "confirm --code" in out.stderr, out.stderr
    label = unquote(urlsplit(uri).path.lstrip("/"))
    assert label == "Doorman:alice@example.com", label
    seed = totp_seed(uri)

    # Enabling again gives a new seed; only the newest waits for confirmation.
    again = cli.ok("totp", "alice@example.com", "enable").strip()
    assert totp_seed(again) != seed
    assert "does not match" in cli.fails("totp", "alice@example.com", "confirm", "--code", totp_code(seed))
    assert "needs --code" in cli.fails("totp", "alice@example.com", "confirm")
    assert "--code goes with" in cli.fails("totp", "alice@example.com", "enable", "--code", "123456")

    # The seed is not in the database in the clear (main file and write-ahead log).
    db = b"".join(f.read_bytes() for f in (cli.config.parent / "data").glob("doorman.db*"))
    secret = parse_qs(urlsplit(again).query)["secret"][0]
    assert secret.encode() not in db and totp_seed(again) not in db

    # A code the app shows confirms it, once.
    assert "sign-in now needs a code" in cli.ok("totp", "alice@example.com", "confirm", "--code",
                                                totp_code(totp_seed(again)))
    assert "no new TOTP seed is waiting" in cli.fails("totp", "alice@example.com", "confirm", "--code",
                                                      totp_code(totp_seed(again)))

    assert "alice@example.com" in cli.ok("totp", "alice@example.com", "disable")
    out = cli("totp", "alice@example.com", "sometimes")
    assert out.returncode != 0


def test_the_same_commands_on_postgresql(tmp_path):
    url = os.environ.get("DOORMAN_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("DOORMAN_TEST_POSTGRES_URL is not set (scripts/test starts PostgreSQL)")
    # A database of its own, so the names below are fresh on every run.
    parts = urlsplit(url)
    name = f"doorman_cli_{secrets.token_hex(6)}"
    createdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/createdb"))
    assert createdb, "createdb not found (scripts/setup-test-env installs PostgreSQL)"
    subprocess.run([createdb[-1], "-h", parts.hostname, "-p", str(parts.port or 5432),
                    "-U", parts.username or "postgres", name], check=True, capture_output=True, timeout=60)
    cli = Cli(write_config(tmp_path, parts._replace(path=f"/{name}").geturl()))

    cli.ok("add", "alice", "--password-stdin", "--admin", stdin=PASSWORD + "\n")
    cli.ok("add", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert "already exists" in cli.fails("add", "Bob", "--password-stdin", stdin=PASSWORD + "\n")
    cli.ok("disable", "bob")
    people = cli.listed()
    assert set(people) == {"alice", "bob"}
    assert people["bob"]["disabled"] is True and people["alice"]["admin"] is True
    cli.ok("enable", "bob")
    cli.ok("reset-password", "bob", "--password-stdin", stdin="a brand new password\n")
    seed = totp_seed(cli.ok("totp", "bob", "enable").strip())
    cli.ok("totp", "bob", "confirm", "--code", totp_code(seed))
    cli.ok("totp", "bob", "disable")
    # Nothing was written to the SQLite default.
    assert not (tmp_path / "data" / "doorman.db").exists()
