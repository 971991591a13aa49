"""The `doorman` command as an operator uses it: no-config start, check-config, refusals, logs."""

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import httpx2
import pytest

from conftest import DOORMAN_BIN
from procs import ROOT, Proc, free_port, wait_http


def run(*args, env=None, cwd=None):
    return subprocess.run([str(DOORMAN_BIN), *map(str, args)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_check_config_accepts_the_example_file():
    out = run("check-config", ROOT / "doorman.example.toml")
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


@pytest.mark.parametrize("text, words", [
    ('[server]\nlisten = "127.0.0.1:1"\nport = 3\n', "server.port: unknown field `port`"),
    ('[[upstreams]]\nname = "a"\nurl = "http://127.0.0.1:1/mcp"\ntimeout = "5 minutes"\n', "upstreams[0].timeout: invalid duration"),
    ('[[upstreams]]\nname = "git"\nurl = "http://127.0.0.1:1/mcp"\n[[upstreams]]\nname = "git_hub"\nurl = "http://127.0.0.1:2/mcp"\n',
     'upstreams[1].name: upstreams "git" and "git_hub" would give colliding tool names'),
    ('[server]\nlisten = "0.0.0.0:8421"\n[sign_in]\nmode = "local"\n', "sign_in.mode: local mode has no sign-in"),
    ('[server\n', "not valid TOML"),
])
def test_check_config_names_the_key_and_the_reason(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    out = run("check-config", f)
    assert out.returncode != 0
    assert words in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, "one line"


def test_check_config_on_a_missing_file():
    out = run("check-config", "/nonexistent/doorman.toml")
    assert out.returncode != 0
    assert "cannot read /nonexistent/doorman.toml" in out.stderr


def test_serve_refuses_local_mode_on_a_public_address(tmp_path):
    f = tmp_path / "public.toml"
    f.write_text('[server]\nlisten = "0.0.0.0:18421"\n[sign_in]\nmode = "local"\n')
    out = run("serve", "--config", f)
    assert out.returncode != 0
    assert "loopback" in out.stderr
    # And the environment override is held to the same rule.
    out = run("serve", env={"DOORMAN_LISTEN": "0.0.0.0:18421", "DOORMAN_SIGN_IN_MODE": "local"}, cwd=tmp_path)
    assert out.returncode != 0 and "loopback" in out.stderr


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_runs_with_no_config_at_all(tmp_path):
    if not port_free(8421):
        pytest.fail("port 8421 is taken on this machine; the no-config default cannot be tested")
    proc = Proc("doorman-no-config", [DOORMAN_BIN, "serve"], cwd=tmp_path)
    try:
        wait_http("http://127.0.0.1:8421/healthz", 20, proc)
        r = httpx2.get("http://127.0.0.1:8421/healthz")
        assert r.json() == {"status": "ok"}
        assert (tmp_path / "doorman-data" / "doorman.db").exists()
        assert (tmp_path / "doorman-data" / "keyring").stat().st_mode & 0o777 == 0o600
        # Accounts mode is the default: /mcp asks for sign-in and says where (RFC 9728).
        r = httpx2.post("http://127.0.0.1:8421/mcp", headers={"Accept": "application/json", "Content-Type": "application/json"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith(
            'Bearer resource_metadata="http://127.0.0.1:8421/.well-known/oauth-protected-resource/mcp"')
        prm = httpx2.get("http://127.0.0.1:8421/.well-known/oauth-protected-resource/mcp").json()
        assert prm["resource"] == "http://127.0.0.1:8421/mcp"
        assert prm["authorization_servers"] == ["http://127.0.0.1:8421"]
    finally:
        assert proc.stop() == 0, "a clean stop on SIGTERM"
    log = proc.log_text()
    assert "Doorman is serving" in log
    # No accounts yet: a one-time link to create the first administrator.
    assert "http://127.0.0.1:8421/setup?token=" in log


def test_json_logs_are_one_object_per_line(tmp_path):
    port = free_port()
    proc = Proc("doorman-json-logs", [DOORMAN_BIN, "serve"], cwd=tmp_path,
                env={"DOORMAN_LOG_FORMAT": "json", "DOORMAN_LISTEN": f"127.0.0.1:{port}"})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 20, proc)
    finally:
        proc.stop()
    lines = [l for l in proc.log_text().splitlines() if l and not l.startswith("===")]
    assert lines
    records = [json.loads(l) for l in lines]
    assert any(r.get("message") == "Doorman is serving" for r in records)
    # The first-run link is a JSON line too, so log collectors do not choke on it.
    assert any(str(r.get("setup_link", "")).startswith(f"http://127.0.0.1:{port}/setup?token=") for r in records)


def test_serve_on_postgres_when_given_a_database_url(tmp_path):
    url = os.environ.get("DOORMAN_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("DOORMAN_TEST_POSTGRES_URL is not set (scripts/test starts PostgreSQL)")
    port = free_port()
    proc = Proc("doorman-postgres", [DOORMAN_BIN, "serve"], cwd=tmp_path,
                env={"DOORMAN_DATABASE_URL": url, "DOORMAN_LISTEN": f"127.0.0.1:{port}", "DOORMAN_SIGN_IN_MODE": "local"})
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 20, proc)
        base = f"http://127.0.0.1:{port}/mcp"
        h = {"Accept": "application/json", "Content-Type": "application/json"}
        r = httpx2.post(base, headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
        sid = r.headers["mcp-session-id"]
        r = httpx2.post(base, headers={**h, "mcp-session-id": sid}, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert r.status_code == 200
    finally:
        proc.stop()
    assert 'engine="postgres"' in proc.log_text() or "postgres" in proc.log_text()


def test_a_session_survives_a_restart_on_the_same_store(tmp_path):
    port = free_port()
    env = {"DOORMAN_LISTEN": f"127.0.0.1:{port}", "DOORMAN_SIGN_IN_MODE": "local"}
    base = f"http://127.0.0.1:{port}"
    h = {"Accept": "application/json", "Content-Type": "application/json"}
    proc = Proc("doorman-restart-1", [DOORMAN_BIN, "serve"], cwd=tmp_path, env=env)
    try:
        wait_http(f"{base}/healthz", 20, proc)
        r = httpx2.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}})
        sid = r.headers["mcp-session-id"]
    finally:
        proc.stop()
    proc = Proc("doorman-restart-2", [DOORMAN_BIN, "serve"], cwd=tmp_path, env=env)
    try:
        wait_http(f"{base}/healthz", 20, proc)
        r = httpx2.post(f"{base}/mcp", headers={**h, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"},
                        json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert r.status_code == 200
    finally:
        proc.stop()


def test_the_readme_run_command_runs_doorman():
    """README's first set-up command is `cargo run --release -- serve`: at the workspace root,
    `cargo run` must pick the doorman binary (checked on the debug profile, already built)."""
    readme = (ROOT / "README.md").read_text()
    assert "cargo run --release -- serve" in readme
    assert "scripts/test" in readme
    out = subprocess.run(["cargo", "run", "--locked", "-q", "--", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("doorman ")


def help_of(*args: str) -> str:
    out = subprocess.run([str(DOORMAN_BIN), *args, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


SUBCOMMANDS = {
    "users": ["add", "list", "disable", "enable", "reset-password", "totp"],
    "clients": ["list", "revoke"],
    "grants": ["list", "revoke"],
    "connections": ["list", "revoke"],
    "keys": ["rotate", "add-sealing-key"],
}


def test_every_subcommand_describes_its_options_and_what_it_has():
    """`doorman --help` names each command with what it has; every command that acts on a
    Doorman explains `--config` (never an undescribed flag), down to each sub-subcommand."""
    top = help_of()
    for command, subs in SUBCOMMANDS.items():
        line = next(l for l in top.splitlines() if l.strip().startswith(command + " "))
        for sub in subs:
            assert sub in line, f"`doorman --help` does not mention {command} {sub}: {line!r}"
    for argv in [("serve",), ("audit",), ("backup",)] + [(c,) for c in SUBCOMMANDS] + [(c, s) for c, subs in SUBCOMMANDS.items()
                                                                          for s in subs]:
        lines = help_of(*argv).splitlines()
        at = [i for i, l in enumerate(lines) if l.strip().startswith("--config")]
        assert at, f"doorman {' '.join(argv)} --help has no --config"
        # The description follows on the same line (short help) or the next (long help).
        described = lines[at[0]].split("<FILE>", 1)[1].strip() or lines[at[0] + 1].strip()
        assert "configuration file" in described, (
            f"doorman {' '.join(argv)} --help does not describe --config: {lines[at[0]:at[0] + 2]!r}")
